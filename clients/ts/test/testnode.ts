/**
 * Starts the multi-process test node (tests/bin/testnode.rs) listening on a
 * WebSocket, and talks to it line by line on stdin/stdout.
 */
import { spawn, type ChildProcessWithoutNullStreams } from "node:child_process";
import { existsSync } from "node:fs";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import type { Pipe } from "../src/index.js";

/** Where the test node binary is: $OSCLOUD_TESTNODE, else the workspace's target/debug. */
export function testnodePath(): string {
  return (
    process.env.OSCLOUD_TESTNODE ?? fileURLToPath(new URL("../../../../target/debug/oscloud-testnode", import.meta.url))
  );
}

export class TestNode {
  private lines: string[] = [];
  private waiters: (() => void)[] = [];
  private exited = false;
  stderr = "";

  private constructor(
    readonly proc: ChildProcessWithoutNullStreams,
    readonly name: string,
  ) {
    createInterface({ input: proc.stdout }).on("line", (l) => {
      this.lines.push(l);
      for (const w of this.waiters.splice(0)) w();
    });
    proc.stderr.on("data", (d: Buffer) => {
      this.stderr = (this.stderr + d.toString()).slice(-4000);
    });
    proc.on("exit", () => {
      this.exited = true;
      for (const w of this.waiters.splice(0)) w();
    });
  }

  /**
   * Starts a node named `name` listening on `ws://127.0.0.1:0/oscloud`.
   * Resolves with the node and its URL, or with a reason to skip (no
   * binary, or a binary without WebSocket support).
   */
  static async start(name: string, extra: string[] = []): Promise<{ node: TestNode; url: string } | { skip: string }> {
    const bin = testnodePath();
    if (!existsSync(bin)) {
      return { skip: `no test node at ${bin}: build it (cargo build -p oscloud-tests --bin oscloud-testnode) or set OSCLOUD_TESTNODE` };
    }
    const proc = spawn(bin, ["--name", name, "--listen", "ws://127.0.0.1:0/oscloud", ...extra], {
      env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? "warn" },
    });
    const node = new TestNode(proc, name);
    const listening = await node.next((l) => l.startsWith("listening "), 10_000);
    if (!listening) {
      proc.kill();
      return { skip: `test node ${bin} has no WebSocket transport (it said: ${node.stderr.trim().split("\n").at(-1) ?? "nothing"})` };
    }
    const ready = await node.next((l) => l === "ready", 10_000);
    if (!ready) {
      proc.kill();
      throw new Error(`test node did not get ready: ${node.stderr}`);
    }
    return { node, url: listening.slice("listening ".length) };
  }

  /** Sends one command and waits for the first line that `match` accepts. */
  async ask(command: string, match: (line: string) => boolean = () => true, timeoutMs = 15_000): Promise<string> {
    this.proc.stdin.write(`${command}\n`);
    const l = await this.next(match, timeoutMs);
    if (l === undefined) throw new Error(`no answer to ${command}; stderr: ${this.stderr}`);
    return l;
  }

  /** The next stdout line that `match` accepts (taken from the buffer), or undefined on timeout/exit. */
  async next(match: (line: string) => boolean, timeoutMs: number): Promise<string | undefined> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const i = this.lines.findIndex(match);
      if (i >= 0) return this.lines.splice(i, 1)[0];
      const left = deadline - Date.now();
      if (this.exited || left <= 0) return undefined;
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  async stop(): Promise<void> {
    if (this.exited) return;
    const gone = new Promise((r) => this.proc.on("exit", r));
    this.proc.stdin.write("quit\n");
    const t = setTimeout(() => this.proc.kill(), 5000);
    await gone;
    clearTimeout(t);
  }
}

/** FNV-1a 64 over frames, as tests/src/lib.rs `Fnv`. */
export class Fnv {
  bytes = 0;
  hash = 0xcbf29ce484222325n;
  update(data: Uint8Array): void {
    let h = this.hash;
    for (const b of data) h = BigInt.asUintN(64, (h ^ BigInt(b)) * 0x100000001b3n);
    this.hash = h;
    this.bytes += data.length;
  }
}

/** Writes `count` frames of 16 KiB (byte j of frame i is `(i * 31 + j) & 0xff`), adding them to `fnv`. */
export async function writePattern(writer: WritableStreamDefaultWriter<Uint8Array>, count: number, fnv: Fnv): Promise<void> {
  for (let i = 0; i < count; i++) {
    const frame = new Uint8Array(16 * 1024).map((_, j) => (i * 31 + j) & 0xff);
    fnv.update(frame);
    await writer.write(frame);
  }
}

/** Reads a pipe's frames into `each` until the peer ends it. */
export async function readAll(pipe: Pipe, each: (frame: Uint8Array) => void): Promise<void> {
  const reader = pipe.readable.getReader();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    each(value);
  }
}
