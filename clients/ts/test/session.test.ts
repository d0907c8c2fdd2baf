/**
 * The sans-IO session in memory: two sessions talking to each other, and
 * one session fed crafted packets.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { CloseCode, decodePacket, encodePacket, type Packet } from "../src/codec.js";
import { Session, type SessionEvent, type SessionOptions } from "../src/session.js";

/** Two sessions wired back to back; `pump` moves packets until both are quiet. */
function pair(a: SessionOptions = {}, b: SessionOptions = {}) {
  let now = 0;
  const A = new Session(now, a);
  const B = new Session(now, b);
  const evA: SessionEvent[] = [];
  const evB: SessionEvent[] = [];
  const wire: { from: "A" | "B"; p: Packet }[] = [];
  const pump = () => {
    for (let i = 0; i < 1000; i++) {
      const outA = A.takeOutput();
      const outB = B.takeOutput();
      if (outA.length === 0 && outB.length === 0) break;
      for (const f of outA) {
        wire.push({ from: "A", p: decodePacket(f) });
        B.receive(f, now);
      }
      for (const f of outB) {
        wire.push({ from: "B", p: decodePacket(f) });
        A.receive(f, now);
      }
    }
    evA.push(...A.takeEvents());
    evB.push(...B.takeEvents());
  };
  const advance = (ms: number) => {
    now += ms;
    A.tick(now);
    B.tick(now);
    pump();
  };
  pump();
  return { A, B, evA, evB, wire, pump, advance, now: () => now };
}

function take<T extends SessionEvent["type"]>(evs: SessionEvent[], type: T): Extract<SessionEvent, { type: T }>[] {
  const out = evs.filter((e) => e.type === type) as Extract<SessionEvent, { type: T }>[];
  for (const e of out) evs.splice(evs.indexOf(e), 1);
  return out;
}

/** The code of the session's `closed` event among its untaken events. */
function closedCode(s: Session): number | undefined {
  const ev = s.takeEvents().find((e) => e.type === "closed");
  return ev?.type === "closed" ? ev.code : undefined;
}

const bytes = (s: string) => new TextEncoder().encode(s);

test("Hello exchange: both sides connect and learn the other's limits", () => {
  const { A, B, evA, evB } = pair({ pipeWindow: 1000 }, { maxFrame: 4096 });
  assert.equal(A.state, "open");
  assert.equal(B.state, "open");
  assert.equal(take(evA, "connected")[0]?.peer.maxFrame, 4096);
  assert.equal(take(evB, "connected")[0]?.peer.pipeWindow, 1000);
});

test("a call gets its reply, a cast arrives, in order", () => {
  const { A, B, evA, evB, pump } = pair();
  const id1 = A.call("upper", bytes("a"));
  const id2 = A.call("upper", bytes("b"));
  A.cast("log", bytes("hi"));
  pump();
  assert.deepEqual([id1, id2], [1, 2]);
  const calls = take(evB, "call");
  assert.deepEqual(
    calls.map((c) => [c.callId, c.to]),
    [
      [1, "upper"],
      [2, "upper"],
    ],
  );
  assert.equal(new TextDecoder().decode(take(evB, "cast")[0]?.payload), "hi");
  B.reply(2, { ok: false, kind: 5, message: "no" });
  B.reply(1, { ok: true, payload: bytes("A") });
  pump();
  const replies = take(evA, "reply");
  assert.deepEqual(
    replies.map((r) => [r.callId, r.ok]),
    [
      [2, false],
      [1, true],
    ],
  );
  assert.throws(() => B.reply(1, { ok: true, payload: bytes("again") }), /no call 1/);
});

test("a reply for a cancelled call is ignored; for a call id never used it closes (code 1)", () => {
  const { A, B, evA, evB, pump } = pair();
  const id = A.call("slow", bytes(""));
  A.cancelCall(id);
  pump();
  B.reply(take(evB, "call")[0]?.callId as number, { ok: true, payload: bytes("late") });
  pump();
  assert.equal(take(evA, "reply").length, 0);
  assert.equal(A.state, "open");
  // B's session answers a call A never made: craft it from B's side.
  const { A: A2, B: B2, evA: evA2, pump: pump2 } = pair();
  B2.call("x", bytes("")); // advances B2's seq; the crafted reply goes from a third party
  pump2();
  A2.receive(encodePacket({ type: "data", seq: 2, ack: 0, msg: { type: "replyOk", callId: 7, payload: bytes("") } }), 0);
  assert.equal(A2.state, "closed");
  assert.equal(closedCode(A2), CloseCode.Protocol);
  assert.equal(take(evA2, "closed").length, 0);
});

test("pipe: credit bounds the writer, the reader's consumption returns it, big frames are cut to max_frame", () => {
  const { A, B, evA, evB, pump } = pair({}, { pipeWindow: 300, maxFrame: 128 });
  const id = A.openPipe("sink", "in");
  assert.equal(id, 0);
  pump();
  const open = take(evB, "pipeOpen")[0];
  assert.deepEqual(open && [open.pipeId, open.server, open.port], [1, "sink", "in"]);
  assert.equal(A.credit(id), 300);
  const frame = new Uint8Array(200).map((_, i) => i);
  assert.equal(A.writeFrame(id, frame), true);
  assert.equal(A.writeFrame(id, new Uint8Array(101)), false, "only 100 bytes of credit left");
  pump();
  const got = take(evB, "pipeFrame");
  assert.equal(got.length, 1);
  assert.deepEqual(got[0]?.frame, frame);
  B.consumed(1, 200);
  pump();
  assert.equal(take(evA, "pipeCredit")[0]?.credit, 300);
  assert.equal(A.writeFrame(id, new Uint8Array(101)), true);
  // The other direction: B writes to A with A's window (65536 by default).
  assert.equal(B.credit(1), 65536);
  assert.equal(B.writeFrame(1, bytes("back")), true);
  pump();
  assert.equal(new TextDecoder().decode(take(evA, "pipeFrame")[0]?.frame), "back");
  assert.throws(() => A.writeFrame(id, new Uint8Array(301)), /pipe window/);
});

test("pipe: end half-closes, both ends close it; an empty frame is one piece", () => {
  const { A, B, evA, evB, pump } = pair();
  const id = A.openPipe("s", "p");
  A.writeFrame(id, new Uint8Array(0));
  A.endPipe(id);
  pump();
  assert.equal(take(evB, "pipeFrame")[0]?.frame.length, 0);
  assert.equal(take(evB, "pipeEnd").length, 1);
  assert.throws(() => A.writeFrame(id, bytes("x")), /ended/);
  assert.equal(B.writeFrame(1, bytes("still open")), true);
  B.endPipe(1);
  pump();
  assert.equal(take(evA, "pipeFrame").length, 1);
  assert.equal(take(evA, "pipeEnd").length, 1);
  // Both ended: each side closes it (the two PipeCloses cross) and reports it.
  assert.equal(take(evA, "pipeClose")[0]?.reason.code, 0);
  assert.equal(take(evB, "pipeClose")[0]?.reason.code, 0);
  assert.equal(A.credit(id), 0);
  assert.equal(A.state, "open");
  assert.equal(B.state, "open");
});

test("pipe violations close the session: beyond credit (7), unknown pipe (6), bad open (1)", () => {
  const sendTo = (s: Session, msg: Packet) => s.receive(encodePacket(msg), 0);
  {
    const { A, B, evB, pump } = pair({}, { pipeWindow: 10 });
    A.openPipe("s", "p");
    pump();
    // 11 bytes to B, whose window is 10.
    sendTo(B, { type: "data", seq: 2, ack: 0, msg: { type: "pipeData", pipeId: 0, last: true, data: new Uint8Array(11) } });
    assert.equal(closedCode(B), CloseCode.FlowControl);
  }
  {
    const { B, evB } = pair();
    sendTo(B, { type: "data", seq: 1, ack: 0, msg: { type: "pipeData", pipeId: 4, last: true, data: new Uint8Array(1) } });
    assert.equal(closedCode(B), CloseCode.UnknownPipe);
  }
  {
    const { B, evB } = pair();
    sendTo(B, { type: "data", seq: 1, ack: 0, msg: { type: "pipeOpen", pipeId: 2, server: "s", port: "p" } });
    assert.equal(closedCode(B), CloseCode.Protocol);
  }
  {
    // Credit that would raise the sender's credit above the window.
    const { A, evA, pump } = pair();
    A.openPipe("s", "p");
    pump();
    sendTo(A, { type: "data", seq: 1, ack: 1, msg: { type: "pipeCredit", pipeId: 1, bytes: 1 } });
    assert.equal(closedCode(A), CloseCode.FlowControl);
  }
});

test("a refused pipe (PipeClose Failed) reaches the opener; later messages for it are ignored", () => {
  const { A, B, evA, evB, pump } = pair();
  const id = A.openPipe("nobody", "p");
  pump();
  B.closePipe(take(evB, "pipeOpen")[0]?.pipeId as number, { code: 1, text: "no such server" });
  A.writeFrame(id, bytes("crossing")); // may cross the close
  pump();
  const c = take(evA, "pipeClose")[0];
  assert.deepEqual(c?.reason, { code: 1, text: "no such server" });
  assert.equal(B.state, "open");
  assert.equal(take(evB, "pipeFrame").length, 0);
});

test("acks: delayed 10 ms after in-order data, Ping answered at once, ack beyond sent closes (1)", () => {
  const { A, B, wire, advance, pump } = pair();
  wire.length = 0;
  A.cast("x", bytes(""));
  pump();
  assert.deepEqual(
    wire.map((w) => [w.from, w.p.type]),
    [["A", "data"]],
    "no ack before the delay",
  );
  advance(10);
  assert.deepEqual(wire.at(-1), { from: "B", p: { type: "ack", ack: 1 } });
  wire.length = 0;
  A.receive(encodePacket({ type: "ping" }), 10);
  assert.deepEqual(A.takeOutput().map((f) => decodePacket(f)), [{ type: "ack", ack: 0 }]);
  B.receive(encodePacket({ type: "ack", ack: 5 }), 10);
  assert.equal(B.state, "closed");
  assert.equal(decodePacket(B.takeOutput()[0] as Uint8Array).type, "close");
});

test("keepalive Ping after 5 s of silence; idle timeout closes with code 9", () => {
  const { A, B, wire, advance, evA } = pair({ keepaliveMs: 5000, idleMs: 30000 }, { keepaliveMs: 5000 });
  wire.length = 0;
  advance(5000);
  assert.ok(wire.some((w) => w.from === "A" && w.p.type === "ping"));
  assert.ok(wire.some((w) => w.from === "B" && w.p.type === "ack"));
  // A alone, nothing received: it gives up after 30 s.
  const lonely = new Session(0, { idleMs: 30000 });
  assert.equal(lonely.nextDeadline(), 30000);
  lonely.tick(29999);
  assert.equal(lonely.state, "handshake");
  lonely.tick(30000);
  assert.equal(lonely.state, "closed");
  assert.equal(lonely.takeEvents().at(-1)?.type, "closed");
  assert.equal(A.state, "open");
  assert.equal(B.state, "open");
  assert.equal(take(evA, "closed").length, 0);
});

test("before the peer's Hello, Data is dropped and messages wait for OPEN", () => {
  const A = new Session(0);
  A.receive(encodePacket({ type: "data", seq: 1, ack: 0, msg: { type: "cast", to: "x", payload: bytes("") } }), 0);
  assert.deepEqual(A.takeEvents(), []);
  A.cast("early", bytes("1"));
  const B = new Session(0);
  for (const f of A.takeOutput()) B.receive(f, 0);
  for (const f of B.takeOutput()) A.receive(f, 0);
  for (const f of A.takeOutput()) B.receive(f, 0);
  assert.deepEqual(
    B.takeEvents().map((e) => e.type),
    ["connected", "cast"],
  );
});

test("bad Hellos close with their codes; a duplicate Hello is answered, another one closes", () => {
  const hello = (over: Partial<import("../src/codec.js").Hello>) =>
    encodePacket({
      type: "hello",
      hello: {
        nodeId: new Uint8Array(16),
        features: 0n,
        sessionId: 5n,
        auth: null,
        maxFrame: 1024,
        recvWindow: 8,
        pipeWindow: 1024,
        ...over,
      },
    });
  const closeCode = (frame: Uint8Array) => {
    const s = new Session(0);
    s.receive(frame, 0);
    const ev = s.takeEvents().find((e) => e.type === "closed");
    return ev && ev.type === "closed" ? ev.code : undefined;
  };
  assert.equal(closeCode(hello({ maxFrame: 127 })), CloseCode.Protocol);
  assert.equal(closeCode(hello({ features: 1n })), CloseCode.Unauthorized);
  assert.equal(closeCode(hello({ resume: { sessionId: 1n, ack: 0n } })), CloseCode.NoSession);
  assert.equal(closeCode(Uint8Array.of(0x91, 0x08)), CloseCode.Decode);
  assert.equal(closeCode(new Uint8Array(65537)), CloseCode.FrameTooLarge);
  const s = new Session(0);
  s.receive(hello({}), 0);
  s.takeOutput();
  s.receive(hello({}), 0);
  assert.deepEqual(s.takeOutput().map((f) => decodePacket(f)), [{ type: "helloAck", sessionId: 5n }]);
  s.receive(hello({ sessionId: 6n }), 0);
  assert.equal(s.state, "closed");
});

test("a message above the peer's max_frame is refused locally; the session stays open", () => {
  const { A } = pair({}, { maxFrame: 128 });
  assert.throws(() => A.cast("x", new Uint8Array(200)), /max_frame/);
  assert.equal(A.state, "open");
});

test("out-of-order Data is buffered and delivered in order; duplicates are dropped", () => {
  const { B, evB } = pair();
  const data = (seq: number, to: string) =>
    encodePacket({ type: "data", seq, ack: 0, msg: { type: "cast", to, payload: new Uint8Array(0) } });
  B.receive(data(2, "second"), 0);
  B.receive(data(1, "first"), 0);
  B.receive(data(1, "again"), 0);
  B.receive(data(3, "third"), 0);
  assert.deepEqual(
    take(evB, "cast"),
    [],
    "events are taken by pump only",
  );
  const evs = B.takeEvents().filter((e) => e.type === "cast");
  assert.deepEqual(
    evs.map((e) => (e.type === "cast" ? e.to : "")),
    ["first", "second", "third"],
  );
});

test("Route messages (§13): taken when the path ends with the peer, refused through this side or repeating a node", () => {
  const { A, B, pump } = pair();
  assert.equal(A.hello.features & 16n, 16n, "ROUTING bit set by default");
  const route = (seq: number, entryId: number, path: Uint8Array[]) =>
    encodePacket({
      type: "data",
      seq,
      ack: 0,
      msg: {
        type: "route",
        entry: { entryId, name: `r${entryId}`, capabilities: { accepts: [], produces: [], features: [], metadata: {} }, group: false },
        originId: 1,
        path,
        cost: 1,
      },
    });
  pump();
  A.takeEvents();
  const far = new Uint8Array(16).fill(7);
  A.receive(route(1, 1, [far, B.hello.nodeId]), 0);
  A.receive(route(2, 2, [A.hello.nodeId, B.hello.nodeId]), 0);
  A.receive(route(3, 3, [far, far, B.hello.nodeId]), 0);
  A.receive(route(4, 4, [B.hello.nodeId, far]), 0);
  const taken = A.takeEvents().filter((e) => e.type === "announce");
  assert.deepEqual(
    taken.map((e) => (e.type === "announce" ? [e.entry.name, e.route?.path.length] : [])),
    [["r1", 2]],
  );
  assert.equal(A.state, "open");
  assert.equal(new Session(0, { routing: false }).hello.features, 0n);
});
