/**
 * Bad input never escapes as anything but a closed session (§9): mutated
 * golden vectors and random bytes, fed to the decoder and to an open
 * session, with a fixed seed so a failure repeats.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { decodePacket, PacketDecodeError } from "../src/codec.js";
import { Session } from "../src/session.js";
import { hexBytes, readVectors } from "./vectors.js";

/** xorshift32: a small, seeded generator. */
function rng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s;
  };
}

/** The golden vectors' bytes (runs like `cc…cc` written out once). */
function seeds(): Uint8Array[] {
  return readVectors().map((v) => hexBytes(v.hex.replace(/([0-9a-f]{2})…\1/g, "$1")));
}

function mutate(b: Uint8Array, next: () => number): Uint8Array {
  const out = Array.from(b);
  const n = 1 + (next() % 4);
  for (let i = 0; i < n; i++) {
    const at = next() % (out.length + 1);
    switch (next() % 4) {
      case 0:
        out[at] = next() & 0xff;
        break;
      case 1:
        out.splice(at, 0, next() & 0xff);
        break;
      case 2:
        out.splice(at, 1);
        break;
      default:
        out.length = Math.min(out.length, at);
    }
  }
  return Uint8Array.from(out);
}

test("the decoder throws only PacketDecodeError on mutated vectors and random bytes", () => {
  const next = rng(0x05c1);
  const base = seeds();
  assert.ok(base.length > 0);
  let decoded = 0;
  for (let i = 0; i < 20000; i++) {
    const input =
      i % 5 === 0
        ? Uint8Array.from({ length: next() % 40 }, () => next() & 0xff)
        : mutate(base[i % base.length] as Uint8Array, next);
    try {
      decodePacket(input, 4096);
      decoded++;
    } catch (e) {
      if (!(e instanceof PacketDecodeError)) {
        assert.fail(`input ${Buffer.from(input).toString("hex")} threw ${String(e)}`);
      }
    }
  }
  assert.ok(decoded > 0, "some mutations still decode");
});

test("an open session fed mutated packets closes at worst, never throws", () => {
  const next = rng(0xbad);
  const base = seeds();
  let closed = 0;
  for (let round = 0; round < 400; round++) {
    const a = new Session(0);
    const b = new Session(0);
    for (const f of a.takeOutput()) b.receive(f, 0);
    for (const f of b.takeOutput()) a.receive(f, 0);
    a.openPipe("s", "p");
    a.call("x", new Uint8Array(1));
    for (let i = 0; i < 50 && b.state !== "closed"; i++) {
      b.receive(mutate(base[next() % base.length] as Uint8Array, next), i);
      b.tick(i);
    }
    b.takeOutput();
    b.takeEvents();
    if (b.state === "closed") closed++;
  }
  assert.ok(closed > 0);
});
