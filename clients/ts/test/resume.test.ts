/**
 * Session resumption in the sans-IO session (PROTOCOL.md §12), this side
 * dialling: one session fed the packets a Rust node sends.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { CloseCode, decodePacket, encodePacket, Feature, type Hello, type Packet } from "../src/codec.js";
import { Session } from "../src/session.js";

const PEER_SESSION = 0x77n;

function peerHello(over: Partial<Hello> = {}): Hello {
  return {
    nodeId: new Uint8Array(16).fill(9),
    features: Feature.Resume,
    sessionId: PEER_SESSION,
    auth: null,
    maxFrame: 4096,
    recvWindow: 64,
    pipeWindow: 65536,
    ...over,
  };
}

const hello = (over: Partial<Hello> = {}) => encodePacket({ type: "hello", hello: peerHello(over) });
const cast = (to: string) => ({ type: "cast" as const, to, payload: new Uint8Array(0) });
const out = (s: Session): Packet[] => s.takeOutput().map((f) => decodePacket(f));
const types = (s: Session) => s.takeEvents().map((e) => e.type);

/** A session with RESUME, open with a peer that sets it too, that sent casts a1..a3 and got one cast. */
function opened(grace = 1000): Session {
  const s = new Session(0, { resumeGraceMs: grace, sessionId: 5n });
  assert.equal(s.hello.features & Feature.Resume, Feature.Resume);
  s.receive(hello(), 0);
  s.cast("a1", new Uint8Array(0));
  s.cast("a2", new Uint8Array(0));
  s.cast("a3", new Uint8Array(0));
  s.receive(encodePacket({ type: "data", seq: 1, ack: 1, msg: cast("b1") }), 0);
  out(s);
  assert.deepEqual(types(s), ["connected", "cast"]);
  assert.ok(s.isResumable());
  return s;
}

test("a lost link detaches; the resume Hello goes first; unacknowledged and new Data go again once the peer resumes", () => {
  const s = opened();
  assert.equal(s.linkLost("gone"), true);
  assert.equal(s.state, "detached");
  assert.deepEqual(types(s), ["detached"]);
  s.cast("a4", new Uint8Array(0)); // numbered 4 and kept: nothing to send it on
  assert.deepEqual(out(s), []);
  assert.equal(s.nextDeadline(), 1000, "the grace");
  s.resume(10);
  assert.equal(s.state, "resuming");
  assert.deepEqual(out(s), [{ type: "hello", hello: { ...s.hello, resume: { sessionId: PEER_SESSION, ack: 1n } } }]);
  // The fresh session of the node's new link says an ordinary Hello first: ignored.
  s.receive(hello({ sessionId: 0x99n }), 11);
  assert.equal(s.state, "resuming");
  assert.deepEqual(out(s), []);
  // Data before the resume Hello is not taken.
  s.receive(encodePacket({ type: "data", seq: 2, ack: 2, msg: cast("early") }), 11);
  assert.deepEqual(types(s), []);
  // The peer had packets 1 and 2: 3 and 4 go again, with the current ack.
  s.receive(hello({ resume: { sessionId: 5n, ack: 2n } }), 12);
  assert.equal(s.state, "open");
  assert.deepEqual(s.takeEvents(), [{ type: "resumed", resent: 2 }]);
  assert.deepEqual(out(s), [
    { type: "helloAck", sessionId: PEER_SESSION },
    { type: "data", seq: 3, ack: 1, msg: cast("a3") },
    { type: "data", seq: 4, ack: 1, msg: cast("a4") },
  ]);
  // The peer resends its packet 2; it is delivered once.
  s.receive(encodePacket({ type: "data", seq: 2, ack: 4, msg: cast("b2") }), 13);
  s.receive(encodePacket({ type: "data", seq: 2, ack: 4, msg: cast("b2") }), 13);
  assert.deepEqual(types(s), ["cast"]);
  assert.equal(s.nextDeadline() !== undefined, true);
});

test("acknowledged packets are not kept: a resume acknowledging everything sends nothing again", () => {
  const s = opened();
  s.receive(encodePacket({ type: "ack", ack: 3 }), 1);
  s.linkLost("gone");
  s.resume(2);
  out(s);
  s.receive(hello({ resume: { sessionId: 5n, ack: 3n } }), 3);
  assert.deepEqual(s.takeEvents().at(-1), { type: "resumed", resent: 0 });
  assert.deepEqual(out(s), [{ type: "helloAck", sessionId: PEER_SESSION }]);
});

test("a resume acknowledging what was never sent, or less than acknowledged, or with other limits, closes with code 1", () => {
  for (const [over, why] of [
    [{ resume: { sessionId: 5n, ack: 4n } }, /never|lack/],
    [{ resume: { sessionId: 5n, ack: 0n } }, /lack/],
    [{ resume: { sessionId: 5n, ack: 1n }, maxFrame: 8192 }, /limits/],
  ] as const) {
    const s = opened();
    s.receive(encodePacket({ type: "ack", ack: 1 }), 1);
    s.linkLost("gone");
    s.resume(2);
    out(s);
    s.receive(hello(over), 3);
    assert.equal(s.state, "closed");
    const closed = s.takeEvents().find((e) => e.type === "closed");
    assert.equal(closed?.type === "closed" ? closed.code : -1, CloseCode.Protocol);
    assert.match(closed?.type === "closed" ? closed.message : "", why);
  }
});

test("the peer refuses the resume (code 12): the session closes with that code", () => {
  const s = opened();
  s.linkLost("gone");
  s.resume(2);
  s.receive(encodePacket({ type: "close", code: CloseCode.NoSession, message: "no such session" }), 3);
  assert.equal(s.state, "closed");
  assert.deepEqual(s.takeEvents().at(-1), { type: "closed", code: 12, message: "no such session", byPeer: true });
});

test("a link lost while resuming detaches again; the grace counts from the first loss and then closes without a packet", () => {
  const s = opened(1000);
  s.linkLost("gone");
  s.resume(400);
  out(s);
  assert.equal(s.linkLost("gone again"), true);
  assert.equal(s.state, "detached");
  assert.equal(s.nextDeadline(), 1000);
  s.tick(999);
  assert.equal(s.state, "detached");
  s.tick(1000);
  assert.equal(s.state, "closed");
  assert.deepEqual(out(s), []);
  const closed = s.takeEvents().find((e) => e.type === "closed");
  assert.equal(closed?.type === "closed" ? closed.code : -1, undefined);
  assert.match(closed?.type === "closed" ? closed.message : "", /grace/);
});

test("the idle timeout detaches a resumable session instead of closing it (code 9)", () => {
  const s = opened();
  s.tick(6000);
  assert.equal(s.state, "detached");
  assert.deepEqual(out(s), []);
  assert.deepEqual(types(s), ["detached"]);
});

test("without RESUME on both sides a lost link closes the session, and nothing is kept", () => {
  const s = new Session(0, { resumeGraceMs: 1000 });
  s.receive(hello({ features: 0n }), 0);
  assert.equal(s.isResumable(), false);
  assert.equal(s.linkLost("gone"), false);
  assert.equal(s.state, "closed");
  assert.throws(() => s.resume(1), /cannot resume/);
  const plain = new Session(0);
  assert.equal(plain.hello.features & Feature.Resume, 0n);
  plain.receive(hello(), 0);
  assert.equal(plain.isResumable(), false);
});
