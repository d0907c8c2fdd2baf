/**
 * The public API between two clients in one process, over an in-memory
 * transport pair (asynchronous delivery, like a socket): one serves, the
 * other looks up, calls, casts and pipes.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import {
  AbortedError,
  Client,
  LINK_HIGH_WATER,
  NotFoundError,
  PipeClosedError,
  RemoteError,
  SessionClosedError,
  SessionResetError,
  TimeoutError,
  type Transport,
} from "../src/index.js";

/** Two connected in-memory transports; each packet is delivered in a later task. */
function transportPair(): [Transport, Transport] {
  type Mem = Transport & {
    peer?: Mem;
    gone: boolean;
    bufferedAmount: number;
    onFrame: (f: Uint8Array) => void;
    onClose: (reason: string) => void;
  };
  const make = (): Mem => ({
    gone: false,
    bufferedAmount: 0,
    onFrame: () => {},
    onClose: () => {},
    start(onFrame, onClose) {
      this.onFrame = onFrame;
      this.onClose = onClose;
    },
    send(frame) {
      const peer = this.peer;
      if (this.gone || !peer) return;
      setImmediate(() => {
        if (!peer.gone) peer.onFrame(frame.slice());
      });
    },
    close() {
      if (this.gone) return;
      this.gone = true;
      const peer = this.peer;
      setImmediate(() => {
        if (peer && !peer.gone) {
          peer.gone = true;
          peer.onClose("peer closed");
        }
      });
    },
  });
  const a = make();
  const b = make();
  a.peer = b;
  b.peer = a;
  return [a, b];
}

async function twoClients(pair = transportPair()): Promise<[Client, Client]> {
  const [ta, tb] = pair;
  return Promise.all([Client.start(ta, { keepaliveMs: 1000 }), Client.start(tb, { keepaliveMs: 1000 })]);
}

test("serve, lookup, call, cast", async () => {
  const [server, client] = await twoClients();
  const casts: unknown[] = [];
  let castArrived: () => void = () => {};
  const arrived = new Promise<void>((r) => (castArrived = r));
  server.serve("upper", {
    call: (req) => {
      if (req === "fail") throw new Error("asked to fail");
      return String(req).toUpperCase();
    },
    cast: (msg) => {
      casts.push(msg);
      castArrived();
    },
  });
  const entry = await client.lookup("upper", { timeout: 2000 });
  assert.equal(entry.name, "upper");
  assert.equal(entry.node, server.nodeId);
  assert.equal(await client.call("upper", "hello"), "HELLO");
  assert.deepEqual(await client.call("upper", "x", { timeout: 2000 }), "X");
  await assert.rejects(client.call("upper", "fail"), (e: unknown) => e instanceof RemoteError && e.kind === 5);
  await assert.rejects(client.call("nobody", 1), (e: unknown) => e instanceof RemoteError && e.kind === 1);
  client.cast("upper", { n: 1, list: [1, 2] });
  await arrived;
  assert.deepEqual(casts, [{ n: 1, list: [1, 2] }]);
  // Raw payloads pass unchanged.
  server.serve("rawecho", { call: (b) => b }, { raw: true });
  await client.lookup("rawecho");
  const raw = await client.call<Uint8Array>("rawecho", Uint8Array.of(0xc1, 0), { raw: true });
  assert.deepEqual([...raw], [0xc1, 0]);
  await client.close();
  await server.closed;
});

test("lookup times out with NotFoundError; call honours timeout and signal", async () => {
  const [server, client] = await twoClients();
  await assert.rejects(client.lookup("missing", { timeout: 50 }), NotFoundError);
  server.serve("never", { call: () => new Promise(() => {}) });
  await client.lookup("never");
  await assert.rejects(client.call("never", 1, { timeout: 50 }), TimeoutError);
  const ac = new AbortController();
  const p = client.call("never", 1, { signal: ac.signal, timeout: 0 });
  ac.abort(new Error("user"));
  await assert.rejects(p, AbortedError);
  await client.close();
});

test("watch reports up and down; closing rejects pending calls", async () => {
  const [server, client] = await twoClients();
  const seen: string[] = [];
  const watching = (async () => {
    for await (const ch of client.watch("svc")) {
      seen.push(`${ch.type} ${ch.entry.name}`);
      if (ch.type === "down") break;
    }
  })();
  let called: () => void = () => {};
  const callArrived = new Promise<void>((r) => (called = r));
  const s = server.serve("svc", {
    call: () => {
      called();
      return new Promise(() => {});
    },
  });
  await client.lookup("svc");
  const pending = client.call("svc", 0, { timeout: 0 });
  await callArrived;
  s.close();
  await watching;
  assert.deepEqual(seen, ["up svc", "down svc"]);
  await server.close();
  await assert.rejects(pending, SessionClosedError);
  const closed = await client.closed;
  assert.equal(closed.code, 0);
  assert.throws(() => client.cast("svc", 1), SessionClosedError);
});

test("pipes: web streams both ways, credit-paced, end and refusal", async () => {
  const [server, client] = await twoClients();
  // The server echoes every frame of port "echo" back, then ends.
  server.serve("pipes", {
    pipe: (port, pipe) => {
      assert.equal(port, "echo");
      void pipe.readable.pipeTo(pipe.writable);
    },
  });
  await client.lookup("pipes");
  const pipe = client.openPipe("pipes", "echo");
  const writer = pipe.writable.getWriter();
  const sent: number[] = [];
  // 64 frames of 4 KiB: 256 KiB through a 64 KiB window each way.
  const writing = (async () => {
    for (let i = 0; i < 64; i++) {
      await writer.write(new Uint8Array(4096).fill(i));
      sent.push(i);
    }
    await writer.close();
  })();
  const got: number[] = [];
  for await (const frame of pipe.readable) {
    assert.equal(frame.length, 4096);
    got.push(frame[0] as number);
  }
  await writing;
  assert.deepEqual(got, sent);
  assert.deepEqual(await pipe.closed, { code: 0, text: "" });

  // A slow reader holds the writer back: the writer gets at most a window ahead.
  let received = 0;
  let release: () => void = () => {};
  const gate = new Promise<void>((r) => (release = r));
  server.serve("slow", {
    pipe: (_port, p) => {
      void (async () => {
        await gate;
        for await (const f of p.readable) received += f.length;
      })();
    },
  });
  await client.lookup("slow");
  const slow = client.openPipe("slow", "in");
  const w = slow.writable.getWriter();
  let written = 0;
  const flood = (async () => {
    for (let i = 0; i < 40; i++) {
      await w.write(new Uint8Array(4096));
      written += 4096;
    }
    await w.close();
  })();
  // Poll until the writer is stuck at the window (64 KiB = 16 frames).
  for (let i = 0; i < 200 && written < 16 * 4096; i++) await new Promise((r) => setTimeout(r, 5));
  // Let every packet in flight arrive (each hop is one setImmediate): no more gets written.
  for (let i = 0; i < 100; i++) await new Promise((r) => setImmediate(r));
  assert.equal(written, 16 * 4096, "the writer waits for credit");
  release();
  await flood;
  for (let i = 0; i < 400 && received < 40 * 4096; i++) await new Promise((r) => setTimeout(r, 5));
  assert.equal(received, 40 * 4096);

  // No such port: the opener's reader errors with the reason.
  const refused = client.openPipe("nobody", "x");
  await assert.rejects(refused.readable.getReader().read(), PipeClosedError);
  assert.equal((await refused.closed).code, 1);
  await client.close();
});

test("pipe writers wait while the link's send queue is above the high-water mark", async () => {
  const pair = transportPair();
  const [server, client] = await twoClients(pair);
  let got = 0;
  server.serve("sink", {
    pipe: (_port, p) => {
      void (async () => {
        for await (const f of p.readable) got += f.length;
      })().catch(() => {}); // the session may close first
    },
  });
  await client.lookup("sink");
  const w = client.openPipe("sink", "in").writable.getWriter();
  (pair[1] as { bufferedAmount: number }).bufferedAmount = LINK_HIGH_WATER + 1;
  let written = false;
  const write = w.write(new Uint8Array(10)).then(() => (written = true));
  for (let i = 0; i < 20; i++) await new Promise((r) => setTimeout(r, 1));
  assert.equal(written, false, "held back by the link's queue");
  (pair[1] as { bufferedAmount: number }).bufferedAmount = 0;
  await write;
  for (let i = 0; i < 200 && got < 10; i++) await new Promise((r) => setTimeout(r, 5));
  assert.equal(got, 10);
  await w.close();
  await client.close();
});

test("a lost link ends the session without a Close code; waiting calls fail", async () => {
  const pair = transportPair();
  const [server, client] = await twoClients(pair);
  server.serve("never", { call: () => new Promise(() => {}) });
  await client.lookup("never");
  const pending = client.call("never", 1, { timeout: 0 });
  pair[0].close(); // the server's side of the link goes away, no Close packet
  await assert.rejects(pending, (e: unknown) => e instanceof SessionClosedError && e.code === undefined);
  const closed = await client.closed;
  assert.equal(closed.code, undefined);
  assert.match(closed.message, /link lost/);
});

test("a traceparent given to call and cast reaches the served name's handler", async () => {
  const [server, client] = await twoClients();
  const seen: (string | undefined)[] = [];
  let castArrived: () => void = () => {};
  const arrived = new Promise<void>((r) => (castArrived = r));
  server.serve("traced", {
    call: (_req, info) => {
      seen.push(info.traceparent);
      return info.traceparent ?? "none";
    },
    cast: (_msg, info) => {
      seen.push(info.traceparent);
      castArrived();
    },
  });
  await client.lookup("traced");
  const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
  assert.equal(await client.call("traced", 1, { traceparent: tp }), tp);
  assert.equal(await client.call("traced", 2), "none");
  // Not a valid header: sent without a context.
  assert.equal(await client.call("traced", 3, { traceparent: "garbage" }), "none");
  client.cast("traced", 4, { traceparent: tp });
  await arrived;
  assert.deepEqual(seen, [tp, undefined, undefined, tp]);
  await client.close();
  await server.closed;
});

test("the peer ends the session: calls in flight fail with SessionResetError, the client dials again with backoff until close()", async () => {
  const [ta, tb] = transportPair();
  let dials = 0;
  const [client, other] = await Promise.all([
    Client.start(ta, {
      dial: async () => {
        dials += 1;
        throw new Error("refused");
      },
      reconnect: { minDelayMs: 1, maxDelayMs: 4 },
    }),
    Client.start(tb),
  ]);
  const events: string[] = [];
  client.on("disconnected", (e) => events.push(`disconnected ${e.resuming}`));
  client.on("reset", () => events.push("reset"));
  other.serve("never", { call: () => new Promise(() => {}) });
  await client.lookup("never");
  const pending = client.call("never", 1, { timeout: 0 });
  await other.close();
  await assert.rejects(pending, (e: unknown) => e instanceof SessionResetError && e.code === 0);
  const deadline = Date.now() + 5000;
  while (dials < 5 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
  assert.ok(dials >= 5, `dialled ${dials} times`);
  assert.equal(client.linked, false);
  assert.deepEqual(events, ["disconnected false"]);
  // close() ends the waits between dials: closed resolves at once.
  await client.close();
  assert.ok((await client.closed) instanceof SessionClosedError);
});
