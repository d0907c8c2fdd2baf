/**
 * Packets and messages of the oscloud wire protocol, version 1
 * (docs/PROTOCOL.md §3–§5), encoded and decoded with @msgpack/msgpack.
 *
 * Every packet is one MessagePack array whose first element is a type code.
 * Counters (seq, ack, call, pipe and entry ids, credit) are JS numbers: a
 * value above 2^53 − 1 is refused as undecodable. Session ids and feature
 * bits are bigints (random u64 values).
 */
import { Decoder, Encoder } from "@msgpack/msgpack";

/** ASCII "OSCL" read as a big-endian u32 (§1). */
export const MAGIC = 0x4f53434c;
/** The protocol version this package speaks. */
export const VERSION = 1;
/** Smallest `max_frame` a Hello may announce (§2). */
export const MIN_MAX_FRAME = 128;

/** Packet type codes (§3). */
export const PacketType = {
  Hello: 1,
  HelloAck: 2,
  Data: 3,
  Ack: 4,
  Ping: 5,
  Close: 6,
  Handshake: 7,
} as const;

/** Message type codes (§4). */
export const MsgType = {
  Announce: 16,
  Withdraw: 17,
  Route: 18,
  Cast: 32,
  Call: 33,
  ReplyOk: 34,
  ReplyErr: 35,
  PipeOpen: 48,
  PipeData: 49,
  PipeCredit: 50,
  PipeClose: 51,
  PipeEnd: 52,
} as const;

/** Close codes (§5.4). */
export const CloseCode = {
  Normal: 0,
  Protocol: 1,
  Version: 2,
  BadMagic: 3,
  FrameTooLarge: 4,
  Decode: 5,
  UnknownPipe: 6,
  FlowControl: 7,
  Limit: 8,
  IdleTimeout: 9,
  Unauthorized: 10,
  Crypto: 11,
  NoSession: 12,
} as const;

/** Remote error kinds carried by ReplyErr (§5.3). */
export const ErrorKind = {
  NotFound: 1,
  Stopped: 2,
  Timeout: 3,
  Decode: 4,
  Failed: 5,
  Denied: 6,
  /** The node took the call but did not serve it (too many of this link's calls at once); retry later. */
  Busy: 7,
} as const;

/** Hello feature bits (§3.1). */
export const Feature = {
  Noise: 1n,
  Psk: 2n,
  AesGcm: 4n,
  Resume: 8n,
  Routing: 16n,
  Aegis: 32n,
} as const;

/** Why an entry or a pipe ended (§5.2): 0 Normal, 1 Failed, 2 LinkDown. */
export interface ExitReason {
  code: number;
  text: string;
}

/** Which way a pipe port's data flows (§5.1): 1 in (the server reads), 2 out (the server writes), 3 both. */
export const PortDirection = { In: 1, Out: 2, Both: 3 } as const;

/** A pipe port a server declares (§5.1). */
export interface Port {
  name: string;
  direction: number;
}

/** What an entry says about itself (§5.1). */
export interface Capabilities {
  accepts: string[];
  produces: string[];
  features: string[];
  metadata: Record<string, string>;
  /** The pipe ports it declares; absent or empty: none declared (which does not prove it takes no pipes). */
  ports?: Port[];
}

/** A registry entry as announced (§4.1). */
export interface EntryInfo {
  entryId: number;
  name: string;
  capabilities: Capabilities;
  group: boolean;
}

/** One message inside a Data packet (§4). */
export type Message =
  | { type: "announce"; entry: EntryInfo }
  | { type: "withdraw"; entryId: number; reason: ExitReason }
  | {
      type: "route";
      entry: EntryInfo;
      originId: number;
      path: Uint8Array[];
      cost: number;
      /** The longest pipe frame the route carries from its sender (§4.1, §13); absent when the sender did not say. */
      pipeFrame?: number;
    }
  /** `trace`: the optional trace context (`TRACE_LEN` bytes, see `parseTraceparent`). */
  | { type: "cast"; to: string; payload: Uint8Array; trace?: Uint8Array }
  | { type: "call"; callId: number; to: string; payload: Uint8Array; trace?: Uint8Array }
  | { type: "replyOk"; callId: number; payload: Uint8Array }
  | { type: "replyErr"; callId: number; kind: number; message: string }
  | { type: "pipeOpen"; pipeId: number; server: string; port: string }
  | { type: "pipeData"; pipeId: number; last: boolean; data: Uint8Array }
  | { type: "pipeCredit"; pipeId: number; bytes: number }
  | { type: "pipeClose"; pipeId: number; reason: ExitReason }
  | { type: "pipeEnd"; pipeId: number };

/** The Hello packet's fields (§3.1). */
export interface Hello {
  nodeId: Uint8Array;
  features: bigint;
  sessionId: bigint;
  auth: Uint8Array | null;
  maxFrame: number;
  recvWindow: number;
  pipeWindow: number;
  /** Only in a Hello that resumes a session (§12). */
  resume?: { sessionId: bigint; ack: bigint } | null;
}

/** One packet (§3). */
export type Packet =
  | { type: "hello"; hello: Hello }
  | { type: "helloAck"; sessionId: bigint }
  | { type: "data"; seq: number; ack: number; msg: Message }
  | { type: "ack"; ack: number }
  | { type: "ping" }
  | { type: "close"; code: number; message: string }
  | { type: "handshake"; noise: Uint8Array };

/**
 * A packet that cannot be decoded. `closeCode` is the Close code the
 * session answers it with: 5 Decode, or 3 BadMagic / 2 Version for a Hello.
 */
export class PacketDecodeError extends Error {
  override readonly name = "PacketDecodeError";
  constructor(
    message: string,
    readonly closeCode: number = CloseCode.Decode,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

const U64_MAX = (1n << 64n) - 1n;
const U32_MAX = 0xffffffff;

/** Decoder limits: nothing in a packet is longer than the packet itself. */
function makeDecoder(maxLen: number): Decoder {
  return new Decoder({
    useBigInt64: true,
    maxStrLength: maxLen,
    maxBinLength: maxLen,
    maxArrayLength: maxLen,
    maxMapLength: maxLen,
    maxExtLength: 0,
    mapKeyConverter: (key: unknown) => {
      if (typeof key !== "string") throw new PacketDecodeError("map key is not a str");
      return key;
    },
  });
}

const encoder = new Encoder({ useBigInt64: true, ignoreUndefined: false });
const decoders = new Map<number, Decoder>();

/** The shortest MessagePack form of a u64: numbers below 2^32, bigints above. */
function u64(v: number | bigint): number | bigint {
  if (typeof v === "bigint") return v <= BigInt(U32_MAX) ? Number(v) : v;
  if (!Number.isSafeInteger(v) || v < 0) throw new RangeError(`not a u64: ${v}`);
  return v <= U32_MAX ? v : BigInt(v);
}

function encodeExit(r: ExitReason): unknown[] {
  return [r.code, r.text];
}

function encodeCaps(c: Capabilities): unknown[] {
  const meta: Record<string, string> = {};
  for (const k of Object.keys(c.metadata).sort()) meta[k] = c.metadata[k] as string;
  const features = [...new Set(c.features)].sort();
  const v: unknown[] = [c.accepts, c.produces, features, meta];
  if (c.ports && c.ports.length > 0) {
    const byName = new Map(c.ports.map((p) => [p.name, p.direction]));
    v.push([...byName.keys()].sort().map((name) => [name, byName.get(name)]));
  }
  return v;
}

function encodeMessage(m: Message): unknown[] {
  switch (m.type) {
    case "announce":
      return [MsgType.Announce, u64(m.entry.entryId), m.entry.name, encodeCaps(m.entry.capabilities), m.entry.group];
    case "withdraw":
      return [MsgType.Withdraw, u64(m.entryId), encodeExit(m.reason)];
    case "route": {
      const route: unknown[] = [
        MsgType.Route,
        u64(m.entry.entryId),
        m.entry.name,
        encodeCaps(m.entry.capabilities),
        m.entry.group,
        u64(m.originId),
        m.path,
        m.cost,
      ];
      if (m.pipeFrame !== undefined) route.push(m.pipeFrame);
      return route;
    }
    case "cast":
      return m.trace ? [MsgType.Cast, m.to, m.payload, m.trace] : [MsgType.Cast, m.to, m.payload];
    case "call":
      return m.trace
        ? [MsgType.Call, u64(m.callId), m.to, m.payload, m.trace]
        : [MsgType.Call, u64(m.callId), m.to, m.payload];
    case "replyOk":
      return [MsgType.ReplyOk, u64(m.callId), m.payload];
    case "replyErr":
      return [MsgType.ReplyErr, u64(m.callId), m.kind, m.message];
    case "pipeOpen":
      return [MsgType.PipeOpen, u64(m.pipeId), m.server, m.port];
    case "pipeData":
      return [MsgType.PipeData, u64(m.pipeId), m.last, m.data];
    case "pipeCredit":
      return [MsgType.PipeCredit, u64(m.pipeId), u64(m.bytes)];
    case "pipeClose":
      return [MsgType.PipeClose, u64(m.pipeId), encodeExit(m.reason)];
    case "pipeEnd":
      return [MsgType.PipeEnd, u64(m.pipeId)];
  }
}

function packetValue(p: Packet): unknown[] {
  switch (p.type) {
    case "hello": {
      const h = p.hello;
      const v: unknown[] = [
        PacketType.Hello,
        MAGIC,
        VERSION,
        h.nodeId,
        u64(h.features),
        u64(h.sessionId),
        h.auth,
        h.maxFrame,
        h.recvWindow,
        h.pipeWindow,
      ];
      if (h.resume) v.push([u64(h.resume.sessionId), u64(h.resume.ack)]);
      return v;
    }
    case "helloAck":
      return [PacketType.HelloAck, u64(p.sessionId)];
    case "data":
      return [PacketType.Data, u64(p.seq), u64(p.ack), encodeMessage(p.msg)];
    case "ack":
      return [PacketType.Ack, u64(p.ack)];
    case "ping":
      return [PacketType.Ping];
    case "close":
      return [PacketType.Close, p.code, p.message];
    case "handshake":
      return [PacketType.Handshake, p.noise];
  }
}

/** Encodes one packet to its MessagePack bytes. */
export function encodePacket(p: Packet): Uint8Array {
  // The encoder reuses its buffer: copy the result out.
  return encoder.encode(packetValue(p)).slice();
}

/** Encodes one message on its own (to measure it against `max_frame`). */
export function encodeMessageBytes(m: Message): Uint8Array {
  return encoder.encode(encodeMessage(m)).slice();
}

// ---- decoding: every field checked for type and range ----

function fail(what: string): never {
  throw new PacketDecodeError(`undecodable packet: ${what}`);
}

function arr(v: unknown, min: number, what: string): unknown[] {
  if (!Array.isArray(v)) fail(`${what} is not an array`);
  if (v.length < min) fail(`${what} has ${v.length} elements, expected at least ${min}`);
  return v;
}

function bigU64(v: unknown, what: string): bigint {
  if (typeof v === "bigint") {
    if (v < 0n || v > U64_MAX) fail(`${what} out of range`);
    return v;
  }
  if (typeof v === "number" && Number.isInteger(v) && v >= 0) return BigInt(v);
  fail(`${what} is not an unsigned integer`);
}

function num(v: unknown, max: number, what: string): number {
  if (typeof v === "bigint") {
    if (v < 0n || v > BigInt(max)) fail(`${what} out of range`);
    return Number(v);
  }
  if (typeof v !== "number" || !Number.isInteger(v) || v < 0 || v > max) {
    fail(`${what} is not an unsigned integer up to ${max}`);
  }
  return v;
}

const safeU64 = (v: unknown, what: string) => num(v, Number.MAX_SAFE_INTEGER, what);
const u32 = (v: unknown, what: string) => num(v, U32_MAX, what);
const u8 = (v: unknown, what: string) => num(v, 0xff, what);

function str(v: unknown, what: string): string {
  if (typeof v !== "string") fail(`${what} is not a str`);
  return v;
}

function bin(v: unknown, what: string): Uint8Array {
  if (!(v instanceof Uint8Array)) fail(`${what} is not a bin`);
  return v;
}

function bool(v: unknown, what: string): boolean {
  if (typeof v !== "boolean") fail(`${what} is not a bool`);
  return v;
}

function strs(v: unknown, what: string): string[] {
  return arr(v, 0, what).map((s) => str(s, what));
}

function decodeExit(v: unknown): ExitReason {
  const a = arr(v, 2, "exit_reason");
  return { code: u8(a[0], "exit code"), text: str(a[1], "exit text") };
}

function decodeCaps(v: unknown): Capabilities {
  const a = arr(v, 4, "capabilities");
  const m = a[3];
  if (typeof m !== "object" || m === null || Array.isArray(m) || m instanceof Uint8Array) fail("metadata is not a map");
  const metadata: Record<string, string> = {};
  for (const [k, val] of Object.entries(m)) metadata[k] = str(val, "metadata value");
  const caps: Capabilities = {
    accepts: strs(a[0], "accepts"),
    produces: strs(a[1], "produces"),
    features: strs(a[2], "features"),
    metadata,
  };
  if (a.length > 4) {
    caps.ports = arr(a[4], 0, "ports").map((p) => {
      const e = arr(p, 2, "port");
      const direction = u8(e[1], "port direction");
      if (direction < 1 || direction > 3) fail(`port direction ${direction}`);
      return { name: str(e[0], "port name"), direction };
    });
  }
  return caps;
}

function decodeEntry(a: unknown[]): EntryInfo {
  return {
    entryId: safeU64(a[1], "entry_id"),
    name: str(a[2], "name"),
    capabilities: decodeCaps(a[3]),
    group: bool(a[4], "group"),
  };
}

function decodeMessage(v: unknown): Message {
  const a = arr(v, 1, "message");
  const code = u8(a[0], "message type");
  switch (code) {
    case MsgType.Announce:
      return { type: "announce", entry: decodeEntry(arr(a, 5, "Announce")) };
    case MsgType.Withdraw:
      arr(a, 3, "Withdraw");
      return { type: "withdraw", entryId: safeU64(a[1], "entry_id"), reason: decodeExit(a[2]) };
    case MsgType.Route: {
      arr(a, 8, "Route");
      const path = arr(a[6], 1, "path").map((id) => {
        const b = bin(id, "path node id");
        if (b.length !== 16) fail("path node id is not 16 bytes");
        return b;
      });
      if (path.length > 32) fail("path longer than 32");
      const route: Message = {
        type: "route",
        entry: decodeEntry(a),
        originId: safeU64(a[5], "origin_id"),
        path,
        cost: u32(a[7], "cost"),
      };
      // Optional, appended later (§4.1): nil or absent says nothing.
      if (a.length > 8 && a[8] !== null) route.pipeFrame = u32(a[8], "pipe_frame");
      return route;
    }
    case MsgType.Cast: {
      arr(a, 3, "Cast");
      const cast: Message = { type: "cast", to: str(a[1], "to"), payload: bin(a[2], "payload") };
      const trace = decodeTrace(a[3]);
      if (trace) cast.trace = trace;
      return cast;
    }
    case MsgType.Call: {
      arr(a, 4, "Call");
      const call: Message = { type: "call", callId: safeU64(a[1], "call_id"), to: str(a[2], "to"), payload: bin(a[3], "payload") };
      const trace = decodeTrace(a[4]);
      if (trace) call.trace = trace;
      return call;
    }
    case MsgType.ReplyOk:
      arr(a, 3, "ReplyOk");
      return { type: "replyOk", callId: safeU64(a[1], "call_id"), payload: bin(a[2], "payload") };
    case MsgType.ReplyErr:
      arr(a, 4, "ReplyErr");
      return {
        type: "replyErr",
        callId: safeU64(a[1], "call_id"),
        kind: u8(a[2], "kind"),
        message: str(a[3], "message"),
      };
    case MsgType.PipeOpen:
      arr(a, 4, "PipeOpen");
      return { type: "pipeOpen", pipeId: safeU64(a[1], "pipe_id"), server: str(a[2], "server"), port: str(a[3], "port") };
    case MsgType.PipeData:
      arr(a, 4, "PipeData");
      return { type: "pipeData", pipeId: safeU64(a[1], "pipe_id"), last: bool(a[2], "last"), data: bin(a[3], "data") };
    case MsgType.PipeCredit:
      arr(a, 3, "PipeCredit");
      return { type: "pipeCredit", pipeId: safeU64(a[1], "pipe_id"), bytes: safeU64(a[2], "bytes") };
    case MsgType.PipeClose:
      arr(a, 3, "PipeClose");
      return { type: "pipeClose", pipeId: safeU64(a[1], "pipe_id"), reason: decodeExit(a[2]) };
    case MsgType.PipeEnd:
      arr(a, 2, "PipeEnd");
      return { type: "pipeEnd", pipeId: safeU64(a[1], "pipe_id") };
    default:
      fail(`unknown message type ${code}`);
  }
}

/**
 * The optional `trace` element of Cast and Call: a bin of `TRACE_LEN`
 * bytes whose trace-id and parent-id are not all zero. Anything else
 * (absent, another type or length, a zero id) is no context: ignored,
 * never an error.
 */
function decodeTrace(v: unknown): Uint8Array | undefined {
  return v instanceof Uint8Array && validTrace(v) ? v : undefined;
}

// ---- trace context (W3C Trace Context `traceparent`, version 00) ----

/** Bytes of the `trace` element: trace-id (16), parent-id (8), trace-flags (1). */
export const TRACE_LEN = 25;

/** Whether `t` is a usable trace context: 25 bytes, neither id all zero. */
export function validTrace(t: Uint8Array): boolean {
  return t.length === TRACE_LEN && t.subarray(0, 16).some((b) => b !== 0) && t.subarray(16, 24).some((b) => b !== 0);
}

const TRACEPARENT = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$/;

/**
 * The `trace` element for a W3C `traceparent` header
 * (`00-<32 hex trace-id>-<16 hex parent-id>-<2 hex flags>`), or undefined
 * when it is not a valid one (version `ff`, a zero id, upper-case hex,
 * extra fields on version 00). A later version's header gives its first
 * four fields, as W3C Trace Context says.
 */
export function parseTraceparent(header: string): Uint8Array | undefined {
  const m = TRACEPARENT.exec(header);
  if (!m) return undefined;
  const [, version, traceId, parentId, flags, rest] = m as unknown as [string, string, string, string, string, string?];
  if (version === "ff" || (version === "00" && rest !== undefined)) return undefined;
  const hex = traceId + parentId + flags;
  const t = new Uint8Array(TRACE_LEN);
  for (let i = 0; i < TRACE_LEN; i++) t[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return validTrace(t) ? t : undefined;
}

/** The version 00 `traceparent` header of a `trace` element. */
export function formatTraceparent(t: Uint8Array): string {
  const hex = Array.from(t, (x) => x.toString(16).padStart(2, "0")).join("");
  return `00-${hex.slice(0, 32)}-${hex.slice(32, 48)}-${hex.slice(48, 50)}`;
}

function decodeHello(a: unknown[]): Hello {
  arr(a, 3, "Hello");
  if (num(a[1], U32_MAX, "magic") !== MAGIC) {
    throw new PacketDecodeError("bad magic", CloseCode.BadMagic);
  }
  const version = num(a[2], U32_MAX, "version");
  if (version !== VERSION) throw new PacketDecodeError(`version ${version}, expected ${VERSION}`, CloseCode.Version);
  arr(a, 10, "Hello");
  const nodeId = bin(a[3], "node_id");
  if (nodeId.length !== 16) fail("node_id is not 16 bytes");
  const auth = a[6] === null ? null : bin(a[6], "auth");
  const hello: Hello = {
    nodeId,
    features: bigU64(a[4], "features"),
    sessionId: bigU64(a[5], "session_id"),
    auth,
    maxFrame: u32(a[7], "max_frame"),
    recvWindow: u32(a[8], "recv_window"),
    pipeWindow: u32(a[9], "pipe_window"),
  };
  if (a.length > 10 && a[10] !== null) {
    const r = arr(a[10], 2, "resume");
    hello.resume = { sessionId: bigU64(r[0], "resume session_id"), ack: bigU64(r[1], "resume ack") };
  }
  return hello;
}

/** Decodes one message on its own (the golden vectors show some that way). */
export function decodeMessageBytes(bytes: Uint8Array, maxLen = 1 << 20): Message {
  return decodeMessage(decodeValue(bytes, maxLen));
}

function decodeValue(bytes: Uint8Array, maxLen: number): unknown {
  let decoder = decoders.get(maxLen);
  if (!decoder) {
    decoder = makeDecoder(maxLen);
    if (decoders.size < 8) decoders.set(maxLen, decoder);
  }
  try {
    return decoder.decode(bytes);
  } catch (e) {
    if (e instanceof PacketDecodeError) throw e;
    throw new PacketDecodeError(`undecodable packet: ${(e as Error).message}`, CloseCode.Decode, { cause: e });
  }
}

/**
 * Decodes one packet. `maxLen` bounds every string, binary, array and map
 * inside (pass the receiver's `max_frame`). Throws PacketDecodeError.
 */
export function decodePacket(bytes: Uint8Array, maxLen = 1 << 20): Packet {
  const a = arr(decodeValue(bytes, maxLen), 1, "packet");
  const code = u8(a[0], "packet type");
  switch (code) {
    case PacketType.Hello:
      return { type: "hello", hello: decodeHello(a) };
    case PacketType.HelloAck:
      arr(a, 2, "HelloAck");
      return { type: "helloAck", sessionId: bigU64(a[1], "session_id") };
    case PacketType.Data:
      arr(a, 4, "Data");
      return { type: "data", seq: safeU64(a[1], "seq"), ack: safeU64(a[2], "ack"), msg: decodeMessage(a[3]) };
    case PacketType.Ack:
      arr(a, 2, "Ack");
      return { type: "ack", ack: safeU64(a[1], "ack") };
    case PacketType.Ping:
      return { type: "ping" };
    case PacketType.Close:
      arr(a, 3, "Close");
      return { type: "close", code: u8(a[1], "close code"), message: str(a[2], "close message") };
    case PacketType.Handshake:
      arr(a, 2, "Handshake");
      return { type: "handshake", noise: bin(a[1], "noise message") };
    default:
      fail(`unknown packet type ${code}`);
  }
}
