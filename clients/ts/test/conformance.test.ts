/**
 * Protocol conformance: every golden vector of docs/PROTOCOL.md. For each,
 * the literal encodes to the documented bytes (generic MessagePack), the
 * bytes decode with this package's codec and encode back byte for byte.
 * The Rust side pins the same vectors in oscloud-core/src/wire/packet.rs
 * (golden_* tests).
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { Encoder } from "@msgpack/msgpack";
import {
  CloseCode,
  decodeMessageBytes,
  decodePacket,
  encodeMessageBytes,
  encodePacket,
  PacketDecodeError,
} from "../src/codec.js";
import { hexBytes, hexPattern, readVectors, toHex } from "./vectors.js";

const vectors = readVectors();
const generic = new Encoder({ useBigInt64: true });

test("PROTOCOL.md has the golden vectors this test expects", () => {
  // 5 inline (HelloAck, Ack, Ping, Close, PipeEnd), the Hello block, 6 Data packets.
  assert.ok(vectors.length >= 12, `found ${vectors.length} vectors`);
});

for (const v of vectors) {
  test(`golden vector line ${v.line}: ${v.literal ?? "(hex block)"}`, () => {
    const pattern = hexPattern(v.hex);
    let bytes: Uint8Array;
    if (v.literal !== undefined) {
      bytes = generic.encode(v.value).slice();
      assert.match(toHex(bytes), pattern, `the literal ${v.literal} encodes to ${toHex(bytes)}`);
    } else {
      bytes = hexBytes(v.hex);
    }
    const code = (v.value as unknown[] | undefined)?.[0] ?? bytes[1];
    if (typeof code === "number" && code >= 16) {
      const m = decodeMessageBytes(bytes);
      assert.equal(toHex(encodeMessageBytes(m)), toHex(bytes));
    } else {
      const p = decodePacket(bytes);
      assert.equal(toHex(encodePacket(p)), toHex(bytes));
    }
  });
}

test("the Hello block decodes to the fields its paragraph gives", () => {
  const hello = vectors.find((v) => v.literal === undefined);
  assert.ok(hello, "no hex-only Hello block");
  const p = decodePacket(hexBytes(hello.hex));
  assert.equal(p.type, "hello");
  if (p.type !== "hello") return;
  assert.deepEqual([...p.hello.nodeId], new Array(16).fill(0xab));
  assert.equal(p.hello.sessionId, 0x0102030405060708n);
  assert.equal(p.hello.features, 0n);
  assert.equal(p.hello.auth, null);
  assert.equal(p.hello.maxFrame, 65536);
  assert.equal(p.hello.recvWindow, 64);
  assert.equal(p.hello.pipeWindow, 65536);
});

test("decoding is strict (§1)", () => {
  const bad = (hex: string, code: number = CloseCode.Decode) => {
    assert.throws(
      () => decodePacket(hexBytes(hex)),
      (e: unknown) => e instanceof PacketDecodeError && e.closeCode === code,
      hex,
    );
  };
  bad("91 05 00"); // trailing bytes
  bad("92 04"); // truncated
  bad("92 04 ff"); // negative ack
  bad("91 08"); // unknown packet type
  bad("94 03 01 00 92 40 01"); // unknown message type
  bad("94 03 01 00 93 20 a3 6c 6f 67 93 68 69 00"); // payload as an array, not bin
  bad("94 03 01 00 93 20 c4 01 6c c4 02 68 69"); // `to` as bin, not str
  bad("93 06 cd 01 00 a1 76"); // close code above u8
  bad("93 01 ce 4f 53 43 4d 01", CloseCode.BadMagic);
  bad("93 01 ce 4f 53 43 4c 02", CloseCode.Version);
  bad("c1"); // never a MessagePack value
  bad("94 03 01 00 95 10 06 a1 63 95 90 90 90 80 91 92 a2 69 6e 04 c2"); // port direction 4 (§5.1)
  bad("94 03 01 00 95 10 06 a1 63 95 90 90 90 80 c0 c2"); // ports nil
  // Ports decode, sorted by name when encoded again; none declared encodes as four elements.
  const ann = decodePacket(hexBytes("94 03 01 00 95 10 06 a1 63 95 90 90 90 80 92 92 a1 7a 02 92 a1 61 01 c2"));
  assert.ok(ann.type === "data" && ann.msg.type === "announce");
  assert.deepEqual(ann.msg.entry.capabilities.ports, [
    { name: "z", direction: 2 },
    { name: "a", direction: 1 },
  ]);
  assert.equal(toHex(encodePacket(ann)), "94030100951006a16395909090809292a1610192a17a02c2");
  // Extra trailing elements are ignored (forward compatibility).
  assert.deepEqual(decodePacket(hexBytes("93 04 05 06")), { type: "ack", ack: 5 });
  // Any integer encoding is accepted: ack 5 as uint64.
  assert.deepEqual(decodePacket(hexBytes("92 04 cf 00 00 00 00 00 00 00 05")), { type: "ack", ack: 5 });
});
