// The TS client in Node against a Rust client, on the same Rust node
// (tests/bin/testnode.rs): sequential 64-byte calls to `upper-n1` and a
// pipe of 64 KiB frames into `sink-n1`, in rounds that alternate which
// client goes first. Not a test: run by scripts/bench-ts.sh after
// `npm run build`. Prints one line per round and measure, then the
// median TS / Rust ratio with its min–max.
//
// Environment: OSCLOUD_TESTNODE (the node binary), BENCH_ROUNDS (5),
// BENCH_CALLS (10000), BENCH_PIPE_MIB (64), BENCH_TCP (1: the Rust client
// over TCP too).
import { spawn } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { createInterface } from "node:readline";
import WebSocket from "ws";
import { connect } from "../dist/index.js";

const bin = process.env.OSCLOUD_TESTNODE;
if (!bin) throw new Error("set OSCLOUD_TESTNODE to a release oscloud-testnode");
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);
const CALLS = Number(process.env.BENCH_CALLS ?? 10000);
const PIPE = Number(process.env.BENCH_PIPE_MIB ?? 64) * 1024 * 1024;
const FRAME = 64 * 1024;
const TCP = (process.env.BENCH_TCP ?? "1") !== "0";
const TEXT = "x".repeat(64);

/** One test node process, driven by lines on stdin. */
class Proc {
  constructor(args) {
    this.lines = [];
    this.waiters = [];
    this.proc = spawn(bin, args, { env: { ...process.env, RUST_LOG: "warn" }, stdio: ["pipe", "pipe", "inherit"] });
    createInterface({ input: this.proc.stdout }).on("line", (l) => {
      this.lines.push(l);
      for (const w of this.waiters.splice(0)) w();
    });
  }
  async next(match, timeoutMs = 60_000) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const i = this.lines.findIndex(match);
      if (i >= 0) return this.lines.splice(i, 1)[0];
      if (Date.now() > deadline) throw new Error("test node: no answer in time");
      await new Promise((r) => {
        const t = setTimeout(r, 100);
        this.waiters.push(() => { clearTimeout(t); r(); });
      });
    }
  }
  async ask(cmd, prefix) {
    this.proc.stdin.write(`${cmd}\n`);
    const l = await this.next((l) => l.startsWith(prefix) || l.startsWith("error") || l.startsWith("timeout"));
    if (!l.startsWith(prefix)) throw new Error(`${cmd}: ${l}`);
    return l;
  }
  /** CPU time of every thread of the process, in ns (/proc/PID/task/* /schedstat). */
  cpuNs() {
    let ns = 0;
    for (const t of readdirSync(`/proc/${this.proc.pid}/task`)) {
      try {
        ns += Number(readFileSync(`/proc/${this.proc.pid}/task/${t}/schedstat`, "utf8").split(" ")[0]);
      } catch { /* the thread ended */ }
    }
    return ns;
  }
  stop() { this.proc.stdin.write("quit\n"); }
}

const server = new Proc(["--name", "n1", "--listen", "ws://127.0.0.1:0/oscloud", "--listen", "tcp://127.0.0.1:0"]);
const wsUrl = (await server.next((l) => l.startsWith("listening ws"))).slice(10);
const tcpUrl = (await server.next((l) => l.startsWith("listening tcp"))).slice(10);
await server.next((l) => l === "ready");

async function rustClient(name, url) {
  const c = new Proc(["--name", name, "--connect", url]);
  await c.next((l) => l.startsWith("linked"));
  await c.ask("wait upper-n1", "found");
  await c.ask("wait sink-n1", "found");
  await c.ask("calls upper-n1 200", "called"); // warm-up
  return c;
}
const rustWs = await rustClient("rw", wsUrl);
const rustTcp = TCP ? await rustClient("rt", tcpUrl) : undefined;

const ts = await connect(wsUrl, { timeout: 10_000, ...(typeof globalThis.WebSocket === "function" ? {} : { wsFactory: (u) => new WebSocket(u) }) });
await ts.lookup("upper-n1", { timeout: 10_000 });
await ts.lookup("sink-n1", { timeout: 10_000 });
for (let i = 0; i < 200; i++) await ts.call("upper-n1", TEXT, { timeout: 10_000 });

let sunk = 0; // the sink counts every pipe into it: wait for the running total
const nodeCpuNs = () => { const u = process.cpuUsage(); return (u.user + u.system) * 1000; };

async function tsCalls() {
  const t = performance.now();
  for (let i = 0; i < CALLS; i++) await ts.call("upper-n1", TEXT, { timeout: 10_000 });
  return CALLS / ((performance.now() - t) / 1000);
}
async function tsPipe() {
  sunk += PIPE;
  const cpu0 = nodeCpuNs(), srv0 = server.cpuNs(), t = performance.now();
  const w = ts.openPipe("sink-n1", "in").writable.getWriter();
  for (let left = PIPE; left > 0; left -= FRAME) await w.write(new Uint8Array(Math.min(FRAME, left)).fill(0x5a));
  await w.close();
  for (;;) {
    const [bytes] = await ts.call("sink-n1", null, { timeout: 10_000 });
    if (Number(bytes) >= sunk) break;
  }
  const s = (performance.now() - t) / 1000;
  return { mbs: PIPE / 1e6 / s, cpu: nodeCpuNs() - cpu0, srv: server.cpuNs() - srv0 };
}
async function rustCalls(c) {
  const [, , us] = (await c.ask(`calls upper-n1 ${CALLS}`, "called")).split(" ");
  return CALLS / (Number(us) / 1e6);
}
async function rustPipe(c) {
  sunk += PIPE;
  const cpu0 = c.cpuNs(), srv0 = server.cpuNs(), t = performance.now();
  await c.ask(`fill sink-n1 in ${PIPE}`, "filled");
  await c.ask(`sinkwait sink-n1 ${sunk}`, "sink");
  const s = (performance.now() - t) / 1000;
  return { mbs: PIPE / 1e6 / s, cpu: c.cpuNs() - cpu0, srv: server.cpuNs() - srv0 };
}

const GiB = 1024 ** 3;
const perGiB = (ns) => (ns / 1e6) * (GiB / PIPE); // ms per GiB
const rows = [];
console.log(`load average ${readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" ")}; ${CALLS} calls, ${PIPE / 2 ** 20} MiB pipe in 64 KiB frames`);
console.log("round order | TS calls/s | Rust ws calls/s | Rust tcp calls/s | TS MB/s | Rust ws MB/s | Rust tcp MB/s | client CPU ms/GiB TS, Rust ws | server CPU ms/GiB (TS pipe, Rust ws pipe)");
for (let r = 0; r < ROUNDS; r++) {
  const tsFirst = r % 2 === 0;
  const o = {};
  const doTs = async () => { o.tsCalls = await tsCalls(); o.tsPipe = await tsPipe(); };
  const doRust = async () => {
    o.rwCalls = await rustCalls(rustWs); o.rwPipe = await rustPipe(rustWs);
    if (rustTcp) { o.rtCalls = await rustCalls(rustTcp); o.rtPipe = await rustPipe(rustTcp); }
  };
  if (tsFirst) { await doTs(); await doRust(); } else { await doRust(); await doTs(); }
  rows.push(o);
  const f = (x) => (x === undefined ? "-" : x.toFixed(0));
  console.log(
    `${r + 1} ${tsFirst ? "TS,Rust" : "Rust,TS"} | ${f(o.tsCalls)} | ${f(o.rwCalls)} | ${f(o.rtCalls)} | ${f(o.tsPipe.mbs)} | ${f(o.rwPipe.mbs)} | ${f(o.rtPipe?.mbs)} | ${f(perGiB(o.tsPipe.cpu))}, ${f(perGiB(o.rwPipe.cpu))} | ${f(perGiB(o.tsPipe.srv))}, ${f(perGiB(o.rwPipe.srv))}`,
  );
}
const median = (xs) => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)]; };
const summary = (label, xs) => console.log(`${label}: median ${median(xs).toFixed(2)}x (${Math.min(...xs).toFixed(2)}–${Math.max(...xs).toFixed(2)})`);
summary("calls/s TS / Rust ws", rows.map((o) => o.tsCalls / o.rwCalls));
summary("pipe MB/s TS / Rust ws", rows.map((o) => o.tsPipe.mbs / o.rwPipe.mbs));
summary("client CPU per GiB TS / Rust ws", rows.map((o) => o.tsPipe.cpu / o.rwPipe.cpu));
if (rustTcp) {
  summary("calls/s TS / Rust tcp", rows.map((o) => o.tsCalls / o.rtCalls));
  summary("pipe MB/s TS / Rust tcp", rows.map((o) => o.tsPipe.mbs / o.rtPipe.mbs));
}
console.log(`medians: TS ${median(rows.map((o) => o.tsCalls)).toFixed(0)} calls/s, ${median(rows.map((o) => o.tsPipe.mbs)).toFixed(0)} MB/s, client ${median(rows.map((o) => perGiB(o.tsPipe.cpu))).toFixed(0)} ms/GiB, server ${median(rows.map((o) => perGiB(o.tsPipe.srv))).toFixed(0)} ms/GiB; ` +
  `Rust ws ${median(rows.map((o) => o.rwCalls)).toFixed(0)} calls/s, ${median(rows.map((o) => o.rwPipe.mbs)).toFixed(0)} MB/s, client ${median(rows.map((o) => perGiB(o.rwPipe.cpu))).toFixed(0)} ms/GiB, server ${median(rows.map((o) => perGiB(o.rwPipe.srv))).toFixed(0)} ms/GiB` +
  (rustTcp ? `; Rust tcp ${median(rows.map((o) => o.rtCalls)).toFixed(0)} calls/s, ${median(rows.map((o) => o.rtPipe.mbs)).toFixed(0)} MB/s` : ""));
await ts.close();
rustWs.stop();
rustTcp?.stop();
server.stop();
