/**
 * Against a real oscloud node (tests/bin/testnode.rs) over a WebSocket:
 * lookup, calls and casts to Rust servers, a pipe into a Rust sink, and
 * the other way round: the Rust node calls and pipes into a name this
 * client serves. Skipped, saying why, when no test node with the
 * WebSocket transport is built (failed instead when OSCLOUD_TS_REQUIRE_LIVE
 * is set, as scripts/test-ts.sh does).
 */
import assert from "node:assert/strict";
import { after, test } from "node:test";
import WebSocket from "ws";
import { connect, RemoteError, type Client, type ConnectOptions } from "../src/index.js";
import { Fnv, readAll, TestNode, writePattern } from "./testnode.js";

const started = await TestNode.start("n1");
const skip = "skip" in started ? started.skip : false;
if (skip && process.env.OSCLOUD_TS_REQUIRE_LIVE) throw new Error(`live tests required (OSCLOUD_TS_REQUIRE_LIVE) but ${skip}`);
if (skip) console.log(`live tests skipped: ${skip}`);

/** Node 22+ has a global WebSocket; Node 20 gets the ws package through wsFactory. */
const options: ConnectOptions =
  typeof (globalThis as { WebSocket?: unknown }).WebSocket === "function"
    ? {}
    : { wsFactory: (url) => new WebSocket(url) };

let shared: Client | undefined;
async function live(): Promise<{ client: Client; node: TestNode }> {
  if ("skip" in started) throw new Error("unreachable");
  shared ??= await connect(started.url, { ...options, timeout: 5000 });
  return { client: shared, node: started.node };
}

after(async () => {
  await shared?.close();
  if (!("skip" in started)) await started.node.stop();
});

test("connect, lookup and call a Rust server; cast; a call to an unknown name is NotFound", { skip }, async () => {
  const { client } = await live();
  const entry = await client.lookup("upper-n1", { timeout: 5000 });
  assert.equal(entry.name, "upper-n1");
  assert.equal(entry.node, client.peerNodeId);
  assert.equal(await client.call("upper-n1", "hello", { timeout: 5000 }), "HELLO from n1");
  client.cast("upper-n1", "a cast"); // one-way: the session carries on
  await assert.rejects(
    client.call("nobody", "x", { timeout: 5000 }),
    (e: unknown) => e instanceof RemoteError && e.kind === 1,
  );
  assert.equal(await client.call("upper-n1", "again", { timeout: 5000 }), "AGAIN from n1");
  // A trace context rides along as the Call's and Cast's last element; the node takes the message either way.
  const traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
  client.cast("upper-n1", "a traced cast", { traceparent });
  assert.equal(await client.call("upper-n1", "traced", { timeout: 5000, traceparent }), "TRACED from n1");
});

test("a pipe into a Rust sink: every byte arrives, credit paces the writer", { skip }, async () => {
  const { client } = await live();
  const sink = await client.lookup("sink-n1", { timeout: 5000 });
  // Nodes that publish ports (PROTOCOL.md §5.1) declare the sink's input.
  if (sink.ports.length > 0) assert.deepEqual(sink.ports, [{ name: "in", direction: 1 }]);
  const pipe = client.openPipe("sink-n1", "in");
  const writer = pipe.writable.getWriter();
  const fnv = new Fnv();
  // 1 MiB in 16 KiB frames: well past one pipe window.
  await writePattern(writer, 64, fnv);
  await writer.close();
  // The sink answers (bytes, checksum) so far; poll until it has all of it.
  const deadline = Date.now() + 10_000;
  let got: [unknown, unknown] = [0, 0];
  while (Date.now() < deadline) {
    got = await client.call<[unknown, unknown]>("sink-n1", null, { timeout: 5000 });
    if (BigInt(got[0] as number | bigint) >= BigInt(fnv.bytes)) break;
  }
  assert.equal(BigInt(got[0] as number | bigint), BigInt(fnv.bytes));
  assert.equal(BigInt(got[1] as number | bigint), fnv.hash);
});

test("the Rust node calls a name this client serves, and pipes into it", { skip }, async () => {
  const { client, node } = await live();
  const received = new Fnv();
  let frames = 0;
  const served = client.serve("ts-upper", {
    call: (req) => `${String(req).toUpperCase()} from ts`,
    pipe: (port, pipe) => {
      assert.equal(port, "in");
      void readAll(pipe, (frame) => {
        received.update(frame);
        frames += 1;
      });
    },
  }, { capabilities: { ports: [{ name: "in", direction: 1 }] } });
  assert.equal(served.name, "ts-upper");
  assert.match(await node.ask("wait ts-upper", (l) => l.includes("ts-upper")), /^found ts-upper /);
  assert.equal(await node.ask("call ts-upper hi there", (l) => /^(reply|error) /.test(l)), "reply HI THERE from ts");
  const piped = await node.ask("pipe ts-upper in 300000", (l) => /^(piped|error) /.test(l));
  const m = /^piped (\d+) (\d+)$/.exec(piped);
  assert.ok(m, piped);
  const deadline = Date.now() + 10_000;
  while (received.bytes < 300000 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  assert.equal(received.bytes, 300000);
  assert.equal(received.hash.toString(), m[2]);
  assert.ok(frames > 1);
  // Withdrawn: the Rust registry sees it go.
  assert.equal(await node.ask("watch ts-upper", (l) => l.startsWith("watching") || l.startsWith("absent")), "watching ts-upper");
  client.serve("ts-other", () => 1).close();
  const s = client.serve("ts-gone", () => 1);
  assert.match(await node.ask("wait ts-gone", (l) => l.includes("ts-gone")), /^found/);
  s.close();
  await client.close();
  shared = undefined;
  assert.match((await node.next((l) => l.startsWith("gone ts-upper") || l.startsWith("timeout gone"), 15_000)) ?? "", /^gone ts-upper/);
});

test("timers: Pings and Acks keep a session with a short idle timeout up; a silent node is closed with code 9", { skip }, async () => {
  // A node that pings after 500 ms without sending and gives up on a silent peer after 600 ms.
  const strict = await TestNode.start("n2", ["--keepalive-ms", "500", "--idle-ms", "600"]);
  assert.ok(!("skip" in strict), "skip" in strict ? strict.skip : "");
  if ("skip" in strict) return;
  try {
    const quiet = await connect(strict.url, { ...options, timeout: 5000, keepaliveMs: 200, idleMs: 600 });
    await quiet.lookup("upper-n2", { timeout: 5000 });
    // Three of the node's idle timeouts pass with nothing but Pings and Acks.
    const idleUntil = Date.now() + 1800;
    while (Date.now() < idleUntil) await new Promise((r) => setTimeout(r, 100));
    assert.equal(await quiet.call("upper-n2", "still here", { timeout: 5000 }), "STILL HERE from n2");
    await quiet.close();
    // A client that waits only 300 ms for a packet (and never pings) gives up on the node.
    const impatient = await connect(strict.url, { ...options, timeout: 5000, keepaliveMs: 60_000, idleMs: 300, reconnect: false });
    const closed = await impatient.closed;
    assert.equal(closed.code, 9, closed.message);
  } finally {
    await strict.node.stop();
  }
});

test("two clients reach each other through the node: a call and a pipe to a name the other serves", { skip }, async () => {
  if ("skip" in started) return;
  const tabA = await connect(started.url, { ...options, timeout: 5000 });
  const tabB = await connect(started.url, { ...options, timeout: 5000 });
  try {
    let sum = 0;
    let ended: () => void = () => {};
    const allIn = new Promise<void>((r) => (ended = r));
    tabA.serve(
      "tab-a",
      {
        call: (req) => `tab-a got ${String(req)}`,
        pipe: (_port, pipe) => {
          void readAll(pipe, (frame) => (sum += frame.length)).then(ended);
        },
      },
      { capabilities: { ports: [{ name: "in", direction: 1 }] } },
    );
    // B learns of tab-a from the node (a Route: the server lives on A's node id).
    const entry = await tabB.lookup("tab-a", { timeout: 5000 });
    assert.equal(entry.node, tabA.nodeId);
    assert.equal(await tabB.call("tab-a", "hello", { timeout: 5000 }), "tab-a got hello");
    // 512 KiB through the node's spliced pipe, paced by credit on both links.
    const w = tabB.openPipe("tab-a", "in").writable.getWriter();
    for (let i = 0; i < 32; i++) await w.write(new Uint8Array(16 * 1024).fill(i));
    await w.close();
    await allIn;
    assert.equal(sum, 512 * 1024);
  } finally {
    await tabA.close();
    await tabB.close();
  }
});
