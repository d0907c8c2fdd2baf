/**
 * Reconnection and session resumption (PROTOCOL.md §12) against real
 * oscloud nodes (tests/bin/testnode.rs, `resume_grace` set): the client
 * reaches the node through a TCP proxy in this process that cuts the
 * connection mid-traffic (both sockets destroyed), refuses connections
 * for a while, or forwards to another node. Checks that calls in flight
 * complete exactly once, casts are neither lost nor duplicated, pipes go
 * on, and that a node that no longer has the session makes the client
 * start a new one and fail what was in flight with SessionResetError.
 */
import assert from "node:assert/strict";
import { createServer, connect as tcpConnect, type Server, type Socket } from "node:net";
import { test } from "node:test";
import WebSocket from "ws";
import { connect, SessionResetError, type Client, type ClientEvent, type ConnectOptions } from "../src/index.js";
import { Fnv, readAll, TestNode, writePattern } from "./testnode.js";

const GRACE = ["--config", "resume_grace=10s"];

const base: ConnectOptions =
  typeof (globalThis as { WebSocket?: unknown }).WebSocket === "function" ? {} : { wsFactory: (url) => new WebSocket(url) };

/** Polls `cond` every 10 ms until it holds, failing after `ms`. */
async function until(what: string, cond: () => boolean, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** A TCP proxy to a node's WebSocket listener that can cut, refuse and retarget. */
class CutProxy {
  private conns = new Set<[Socket, Socket]>();
  /** Bytes from clients to the node since the last `cutAfter`. */
  private up = 0;
  private cutAt: number | undefined;
  refusing = false;
  cuts = 0;
  accepted = 0;

  private constructor(
    private readonly server: Server,
    private target: { host: string; port: number },
  ) {
    server.on("connection", (client) => this.onConnection(client));
  }

  static async start(nodeUrl: string): Promise<CutProxy> {
    const p = new CutProxy(createServer(), CutProxy.parse(nodeUrl));
    await new Promise<void>((r) => p.server.listen(0, "127.0.0.1", r));
    return p;
  }

  private static parse(url: string): { host: string; port: number } {
    const u = new URL(url);
    return { host: u.hostname, port: Number(u.port) };
  }

  /** The URL the client dials. */
  get url(): string {
    const a = this.server.address() as { port: number };
    return `ws://127.0.0.1:${a.port}/oscloud`;
  }

  retarget(nodeUrl: string): void {
    this.target = CutProxy.parse(nodeUrl);
  }

  /** Destroys every forwarded connection, both sides. */
  cut(): void {
    this.cuts += 1;
    for (const [a, b] of this.conns) {
      a.destroy();
      b.destroy();
    }
    this.conns.clear();
  }

  /** Cuts once `n` more bytes went from clients to the node. */
  cutAfter(n: number): void {
    this.up = 0;
    this.cutAt = n;
  }

  private onConnection(client: Socket): void {
    if (this.refusing) {
      client.destroy();
      return;
    }
    this.accepted += 1;
    const node = tcpConnect(this.target.port, this.target.host);
    const pair: [Socket, Socket] = [client, node];
    this.conns.add(pair);
    const end = () => {
      this.conns.delete(pair);
      client.destroy();
      node.destroy();
    };
    client.on("data", (d: Buffer) => {
      node.write(d);
      this.up += d.length;
      if (this.cutAt !== undefined && this.up >= this.cutAt) {
        this.cutAt = undefined;
        this.cut();
      }
    });
    node.on("data", (d: Buffer) => client.write(d));
    client.on("close", end);
    node.on("close", end);
    client.on("error", end);
    node.on("error", end);
  }

  async stop(): Promise<void> {
    this.cut();
    await new Promise((r) => this.server.close(r));
  }
}

/** Records a client's link events. */
function record(c: Client): ClientEvent[] {
  const evs: ClientEvent[] = [];
  c.on("disconnected", (e) => evs.push(e));
  c.on("resumed", (e) => evs.push(e));
  c.on("reset", (e) => evs.push(e));
  return evs;
}

const count = (evs: ClientEvent[], type: ClientEvent["type"]) => evs.filter((e) => e.type === type).length;

async function startNode(name: string, extra: string[] = GRACE): Promise<{ node: TestNode; url: string }> {
  const s = await TestNode.start(name, extra);
  if ("skip" in s) throw new Error(s.skip);
  return s;
}

const live = await TestNode.start("probe", ["--config", "resume_grace=1s"]);
const skip = "skip" in live ? live.skip : false;
if (skip && process.env.OSCLOUD_TS_REQUIRE_LIVE) throw new Error(`live tests required (OSCLOUD_TS_REQUIRE_LIVE) but ${skip}`);
if (!("skip" in live)) await live.node.stop();

test("cut links mid-traffic: calls complete exactly once, casts are neither lost nor duplicated", { skip }, async () => {
  const { node, url } = await startNode("r1");
  const proxy = await CutProxy.start(url);
  // B serves a counter directly; A calls it (and the node's servers) through the proxy.
  const b = await connect(url, { ...base, timeout: 5000 });
  const a = await connect(proxy.url, { ...base, timeout: 5000 });
  const evs = record(a);
  try {
    const seen = new Map<number, number>();
    b.serve("ts-count", (req) => {
      const i = req as number;
      seen.set(i, (seen.get(i) ?? 0) + 1);
      return i * 2;
    });
    await a.lookup("ts-count", { timeout: 5000 });
    await a.lookup("slow-r1", { timeout: 5000 });
    const N = 300;
    const calls: Promise<unknown>[] = [];
    // Three batches of 100 rounds (each well above 3 KB up the link); the
    // link is cut 3 KB into each, and resumes before the next batch.
    for (let batch = 1; batch <= 3; batch++) {
      proxy.cutAfter(3000);
      for (let i = (batch - 1) * 100; i < batch * 100; i++) {
        calls.push(a.call("ts-count", i, { timeout: 20_000 }));
        calls.push(a.call("upper-r1", `c${i}`, { timeout: 20_000 }));
        a.cast("slow-r1", `cast ${i}`);
        a.cast("slow-r1", `cast ${i} again`);
        if (i % 20 === 19) await new Promise((r) => setImmediate(r));
      }
      await until(`resumption ${batch}`, () => count(evs, "resumed") === batch);
    }
    const replies = await Promise.all(calls);
    for (let i = 0; i < N; i++) {
      assert.equal(replies[2 * i], i * 2);
      assert.equal(replies[2 * i + 1], `C${i} from r1`);
    }
    assert.equal(seen.size, N);
    assert.ok([...seen.values()].every((n) => n === 1), "every call ran once");
    // The slow server handles casts in order, then this call: it counts every cast once.
    assert.equal(await a.call("slow-r1", "", { timeout: 10_000 }), String(2 * N));
    assert.equal(proxy.cuts, 3);
    assert.equal(count(evs, "disconnected"), 3);
    assert.equal(count(evs, "resumed"), 3);
    assert.equal(count(evs, "reset"), 0);
    // What the node had not acknowledged when a link was cut went again.
    assert.ok(evs.some((e) => e.type === "resumed" && e.resent > 0), JSON.stringify(evs));
    assert.ok(a.linked);
  } finally {
    await a.close();
    await b.close();
    await proxy.stop();
    await node.stop();
  }
});

test("pipes go on across cut links, both ways, every byte once and in order", { skip }, async () => {
  const { node, url } = await startNode("r2");
  const proxy = await CutProxy.start(url);
  const a = await connect(proxy.url, { ...base, timeout: 5000 });
  const evs = record(a);
  try {
    await a.lookup("sink-r2", { timeout: 5000 });
    // Into the node's sink: 1 MiB in 16 KiB frames, cut twice on the way.
    let cuts = 0;
    a.on("resumed", () => {
      if (++cuts < 2) proxy.cutAfter(300_000);
    });
    proxy.cutAfter(200_000);
    const w = a.openPipe("sink-r2", "in").writable.getWriter();
    const sent = new Fnv();
    await writePattern(w, 64, sent);
    await w.close();
    assert.equal(await node.ask(`sinkwait sink-r2 ${sent.bytes}`, (l) => /^(sink|timeout|error)/.test(l)), `sink ${sent.bytes} ${sent.hash}`);
    assert.equal(count(evs, "resumed"), 2);

    // From the node into a name A serves: cut while the frames come down (the acks go up).
    const received = new Fnv();
    a.serve(
      "ts-in",
      {
        pipe: (_port, pipe) => {
          void readAll(pipe, (frame) => {
            received.update(frame);
            if (received.bytes > 100_000 && proxy.cuts === 2) proxy.cut();
          });
        },
      },
      { capabilities: { ports: [{ name: "in", direction: 1 }] } },
    );
    assert.match(await node.ask("wait ts-in", (l) => l.includes("ts-in")), /^found ts-in/);
    const piped = await node.ask("pipe ts-in in 400000", (l) => /^(piped|error|timeout)/.test(l));
    const m = /^piped 400000 (\d+)$/.exec(piped);
    assert.ok(m, piped);
    await until("every byte of the node's pipe", () => received.bytes >= 400_000);
    assert.equal(received.bytes, 400_000);
    assert.equal(received.hash.toString(), m[1]);
    assert.equal(proxy.cuts, 3);
    await until("the third resumption", () => count(evs, "resumed") === 3);
    assert.equal(count(evs, "reset"), 0);
  } finally {
    await a.close();
    await proxy.stop();
    await node.stop();
  }
});

test("a node that no longer has the session: a new one starts, what was in flight fails with SessionResetError", { skip }, async () => {
  const first = await startNode("r3");
  const proxy = await CutProxy.start(first.url);
  const a = await connect(proxy.url, { ...base, timeout: 5000, reconnect: { minDelayMs: 20, maxDelayMs: 200 } });
  const evs = record(a);
  let second: { node: TestNode; url: string } | undefined;
  try {
    a.serve("ts-again", () => "still here");
    await a.lookup("upper-r3", { timeout: 5000 });
    const watch = a.watch("upper-r3");
    assert.equal((await watch.next()).value?.type, "up");
    // The link goes and stays away; a call made meanwhile waits in the kept session.
    proxy.refusing = true;
    proxy.cut();
    await until("disconnected", () => count(evs, "disconnected") === 1);
    const pending = a.call("upper-r3", "lost", { timeout: 20_000 });
    const failed = pending.then(
      () => undefined,
      (e: unknown) => e,
    );
    // The node restarts: the new one knows nothing of the session.
    await first.node.stop();
    second = await startNode("r3b");
    proxy.retarget(second.url);
    proxy.refusing = false;
    const err = await failed;
    assert.ok(err instanceof SessionResetError, String(err));
    assert.equal(err.code, 12, err.message);
    await until("reset", () => count(evs, "reset") === 1);
    assert.equal(count(evs, "resumed"), 0);
    const reset = evs.find((e) => e.type === "reset");
    assert.equal(reset?.type === "reset" ? reset.error.code : undefined, 12);
    // The old entry went down for the watcher; the new session works and serves again.
    assert.equal((await watch.next()).value?.type, "down");
    await watch.return?.();
    assert.equal(await a.call("upper-r3b", "new", { timeout: 5000 }), "NEW from r3b");
    assert.match(await second.node.ask("wait ts-again", (l) => l.includes("ts-again")), /^found ts-again/);
    assert.equal(await second.node.ask("call ts-again x", (l) => /^(reply|error)/.test(l)), "reply still here");
  } finally {
    await a.close();
    await proxy.stop();
    await first.node.stop();
    await second?.node.stop();
  }
});

test("a node that does not resume sessions: a cut link starts a new session at once", { skip }, async () => {
  const { node, url } = await startNode("r4", []);
  const proxy = await CutProxy.start(url);
  const a = await connect(proxy.url, { ...base, timeout: 5000 });
  const evs = record(a);
  try {
    await a.lookup("upper-r4", { timeout: 5000 });
    proxy.cut();
    await until("reset", () => count(evs, "reset") === 1);
    assert.equal(count(evs, "disconnected"), 1);
    const d = evs[0];
    assert.equal(d?.type === "disconnected" ? d.resuming : undefined, false);
    assert.equal(await a.call("upper-r4", "fresh", { timeout: 5000 }), "FRESH from r4");
  } finally {
    await a.close();
    await proxy.stop();
    await node.stop();
  }
});
