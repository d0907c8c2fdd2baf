/**
 * Trace context on the wire: the optional trailing `trace` element of Cast
 * and Call (25 bytes: trace-id 16, parent-id 8, trace-flags 1, the values
 * of a W3C `traceparent` of version 00). The expected bytes are written
 * by hand from the wire layout, not produced by this package's encoder.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import {
  decodePacket,
  encodePacket,
  formatTraceparent,
  parseTraceparent,
  TRACE_LEN,
  type Packet,
} from "../src/codec.js";
import { Session } from "../src/session.js";
import { hexBytes, toHex } from "./vectors.js";

/** Hex with a space between bytes, as the vectors above are written. */
const spaced = (b: Uint8Array) => (toHex(b).match(/../g) ?? []).join(" ");

/** The W3C Trace Context specification's example header. */
const TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
/** bin 8, length 25, then trace-id, parent-id, flags. */
const TRACE_HEX = "c4 19 0a f7 65 19 16 cd 43 dd 84 48 eb 21 1c 80 31 9c b7 ad 6b 71 69 20 33 31 01";
const trace = parseTraceparent(TRACEPARENT) as Uint8Array;

// [3, 1, 0, [33, 1, "upper", bin (str "hello"), bin trace]]
const CALL_HEX = `94 03 01 00 95 21 01 a5 75 70 70 65 72 c4 06 a5 68 65 6c 6c 6f ${TRACE_HEX}`;
// [3, 1, 0, [32, "log", bin (str "hi"), bin trace]]
const CAST_HEX = `94 03 01 00 94 20 a3 6c 6f 67 c4 03 a2 68 69 ${TRACE_HEX}`;
const hello = hexBytes("a5 68 65 6c 6c 6f");
const hi = hexBytes("a2 68 69");

test("traceparent ↔ the 25 bytes of the trace element", () => {
  assert.equal(trace.length, TRACE_LEN);
  assert.equal(`c4 19 ${spaced(trace)}`, TRACE_HEX);
  assert.equal(formatTraceparent(trace), TRACEPARENT);
  // Not a usable version 00 header: no context.
  for (const bad of [
    "00-00000000000000000000000000000000-b7ad6b7169203331-01", // zero trace-id
    "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01", // zero parent-id
    "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", // version ff
    "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01", // upper case
    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-x", // extra field on 00
    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331", // no flags
    "",
  ]) {
    assert.equal(parseTraceparent(bad), undefined, bad);
  }
  // A later version: its first four fields.
  assert.equal(formatTraceparent(parseTraceparent(`01${TRACEPARENT.slice(2)}-later`) as Uint8Array), TRACEPARENT);
});

test("a Call and a Cast with a trace encode to the bytes of the wire layout, and decode back", () => {
  const call: Packet = { type: "data", seq: 1, ack: 0, msg: { type: "call", callId: 1, to: "upper", payload: hello, trace } };
  const cast: Packet = { type: "data", seq: 1, ack: 0, msg: { type: "cast", to: "log", payload: hi, trace } };
  assert.equal(spaced(encodePacket(call)), CALL_HEX);
  assert.equal(spaced(encodePacket(cast)), CAST_HEX);
  assert.deepEqual(decodePacket(hexBytes(CALL_HEX)), call);
  assert.deepEqual(decodePacket(hexBytes(CAST_HEX)), cast);
  // Without a context the element is omitted: the golden vectors of PROTOCOL.md.
  const plain: Packet = { type: "data", seq: 1, ack: 0, msg: { type: "call", callId: 1, to: "upper", payload: hello } };
  assert.equal(spaced(encodePacket(plain)), "94 03 01 00 94 21 01 a5 75 70 70 65 72 c4 06 a5 68 65 6c 6c 6f");
});

test("a trace element that is not a bin of 25 bytes with non-zero ids is ignored, never an error", () => {
  const head = "94 03 01 00 95 21 01 a5 75 70 70 65 72 c4 06 a5 68 65 6c 6c 6f";
  const zeros = (n: number) => Array(n).fill("00").join(" ");
  const ones = (n: number) => Array(n).fill("11").join(" ");
  for (const [what, tail] of [
    ["24 bytes", `c4 18 ${ones(24)}`],
    ["26 bytes", `c4 1a ${ones(26)}`],
    ["a str", `a3 61 62 63`],
    ["nil", `c0`],
    ["zero trace-id", `c4 19 ${zeros(16)} ${ones(8)} 01`],
    ["zero parent-id", `c4 19 ${ones(16)} ${zeros(8)} 01`],
  ]) {
    const p = decodePacket(hexBytes(`${head} ${tail}`));
    assert.equal(p.type, "data", what);
    assert.deepEqual(p.type === "data" ? p.msg : undefined, { type: "call", callId: 1, to: "upper", payload: hello }, what);
  }
  // Elements after the trace are skipped (PROTOCOL.md §1).
  const later = decodePacket(hexBytes(`94 03 01 00 95 20 a3 6c 6f 67 c4 03 a2 68 69 ${TRACE_HEX} c3`));
  assert.deepEqual(later.type === "data" ? later.msg : undefined, { type: "cast", to: "log", payload: hi, trace });
});

test("the session sends the trace with a call and a cast and reports the peer's", () => {
  const a = new Session(0);
  const b = new Session(0);
  for (const f of a.takeOutput()) b.receive(f, 0);
  for (const f of b.takeOutput()) a.receive(f, 0);
  a.call("upper", hello, trace);
  a.cast("log", hi, trace);
  a.cast("log", hi);
  assert.throws(() => a.cast("log", hi, new Uint8Array(25)), /trace context/);
  for (const f of a.takeOutput()) b.receive(f, 0);
  const evs = b.takeEvents().filter((e) => e.type === "call" || e.type === "cast");
  assert.deepEqual(evs, [
    { type: "call", callId: 1, to: "upper", payload: hello, trace },
    { type: "cast", to: "log", payload: hi, trace },
    { type: "cast", to: "log", payload: hi },
  ]);
});
