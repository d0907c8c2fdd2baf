/**
 * A sans-IO oscloud session (docs/PROTOCOL.md §6–§8) on a reliable link
 * (a stream or a reliable message link such as a WebSocket): nothing is
 * retransmitted on one link, the send window does not apply, acks are
 * still sent. With `resumeGraceMs` it can resume on a new link (§12, as
 * the side that dials): Data packets are kept until acknowledged, a lost
 * link detaches the session, `resume` continues it on the next link and
 * sends again what the peer lacks.
 *
 * It owns no socket and no timer. The driver feeds it received packets
 * (`receive`) and the time (`tick`), asks it to do things (cast, call,
 * open pipes, …), then takes the packets to send (`takeOutput`), the events
 * for the application (`takeEvents`) and the next time it wants a `tick`
 * (`nextDeadline`). Times are milliseconds on any monotonic clock.
 */
import {
  CloseCode,
  decodePacket,
  encodeMessageBytes,
  encodePacket,
  Feature,
  MIN_MAX_FRAME,
  type EntryInfo,
  type ExitReason,
  type Hello,
  type Message,
  type Packet,
  PacketDecodeError,
  validTrace,
} from "./codec.js";

/** Limits and timers of one session; every field has a default. */
export interface SessionOptions {
  /** Our node id, 16 bytes (random by default: a plaintext node claims its id). */
  nodeId?: Uint8Array;
  /** Our session id (random by default). */
  sessionId?: bigint;
  /** Largest packet we accept [65536]. */
  maxFrame?: number;
  /** Data packets the peer may have unacknowledged towards us [64]. */
  recvWindow?: number;
  /** Initial credit of every pipe towards us, bytes [65536]. */
  pipeWindow?: number;
  /** Send a Ping after this long without sending anything [2000 ms, as a Rust node]. */
  keepaliveMs?: number;
  /** Close (code 9) after this long without receiving anything [6000 ms, as a Rust node]. */
  idleMs?: number;
  /** Delay of a standalone Ack after an in-order Data packet [10 ms]. */
  ackDelayMs?: number;
  /** Most calls from the peer waiting for our reply [1024]. */
  maxPendingCalls?: number;
  /** Most pipes the peer may have open towards us [256]. */
  maxPipes?: number;
  /**
   * Take Route messages (Hello feature bit 4, PROTOCOL.md §13) [true]: the
   * peer then announces the servers it reaches on other nodes too, and
   * forwards calls, casts and pipes to them. This side never re-announces
   * (it is a leaf).
   */
  routing?: boolean;
  /**
   * Keep the session this long after its link is lost, waiting for a new
   * one (`resume`), and set Hello feature bit 3 `RESUME` (PROTOCOL.md §12)
   * [0: off, a lost link closes the session]. The session resumes only if
   * the peer's Hello sets `RESUME` too.
   */
  resumeGraceMs?: number;
}

/** What the session reports to the application. */
export type SessionEvent =
  | { type: "connected"; peer: Hello }
  | { type: "announce"; entry: EntryInfo; route?: { originId: number; path: Uint8Array[]; cost: number } }
  | { type: "withdraw"; entryId: number; reason: ExitReason }
  /** `trace`: the sender's trace context, when it sent a valid one. */
  | { type: "cast"; to: string; payload: Uint8Array; trace?: Uint8Array }
  | { type: "call"; callId: number; to: string; payload: Uint8Array; trace?: Uint8Array }
  | { type: "reply"; callId: number; ok: true; payload: Uint8Array }
  | { type: "reply"; callId: number; ok: false; kind: number; message: string }
  | { type: "pipeOpen"; pipeId: number; server: string; port: string }
  | { type: "pipeFrame"; pipeId: number; frame: Uint8Array }
  | { type: "pipeCredit"; pipeId: number; credit: number }
  | { type: "pipeEnd"; pipeId: number }
  | { type: "pipeClose"; pipeId: number; reason: ExitReason }
  /** The link was lost (or went silent) and the session waits for a new one (`resume`). */
  | { type: "detached"; reason: string }
  /** The session runs again on a new link; what the peer lacked was sent again. */
  | { type: "resumed"; resent: number }
  /** `code` is the Close code sent or received; undefined when the link was lost without one. */
  | { type: "closed"; code: number | undefined; message: string; byPeer: boolean };

/**
 * Session state (§6): DETACHED (no link) and RESUMING (our resume Hello
 * sent on a new link) only for resumable sessions (§12).
 */
export type SessionState = "handshake" | "open" | "detached" | "resuming" | "closed";

/** A local misuse the session refuses (the session itself stays open). */
export class SessionUsageError extends Error {
  override readonly name = "SessionUsageError";
}

/**
 * Bytes a Data packet carrying a PipeData piece adds around the piece, at
 * most: fixarray(4) + type + seq (≤ 9) + ack (≤ 9) + fixarray(4) + type +
 * pipe id (≤ 9) + bool + bin32 header (5) = 37.
 */
export const PIPE_DATA_OVERHEAD = 37;

/**
 * Most Data packets kept for resumption while unacknowledged, as a Rust
 * node (the peer acknowledges within its ack delay; past this the peer has
 * stopped acknowledging and the session closes with code 8).
 */
export const RETAIN_MAX = 1 << 16;

interface PipeState {
  /** Bytes we may still send. */
  sendCredit: number;
  /** Bytes the peer sent that our reader has not returned yet. */
  unreturned: number;
  /** Pieces of the frame being received. */
  pieces: Uint8Array[];
  localEnded: boolean;
  remoteEnded: boolean;
}

function randomBytes(n: number): Uint8Array {
  const b = new Uint8Array(n);
  globalThis.crypto.getRandomValues(b);
  return b;
}

function randomU64(): bigint {
  const b = randomBytes(8);
  let v = 0n;
  for (const x of b) v = (v << 8n) | BigInt(x);
  return v === 0n ? 1n : v;
}

/** The sans-IO session. */
export class Session {
  readonly hello: Hello;
  private readonly keepaliveMs: number;
  private readonly idleMs: number;
  private readonly ackDelayMs: number;
  private readonly maxPendingCalls: number;
  private readonly maxPipes: number;
  private readonly resumeGraceMs: number;

  private stateValue: SessionState = "handshake";
  private peerHello: Hello | undefined;
  private now: number;
  private lastSent: number;
  private lastReceived: number;
  private ackDue: number | undefined;

  private output: Uint8Array[] = [];
  private events: SessionEvent[] = [];
  /** Messages queued before OPEN (they get their seq once the peer's limits are known). */
  private early: Message[] = [];

  private nextSeq = 1;
  private peerAcked = 0;
  /** Highest seq received in order from the peer. */
  private recvAck = 0;
  private outOfOrder = new Map<number, Message>();
  /** Both Hellos set RESUME. */
  private resumable = false;
  /** Data packets sent (or numbered while detached) and not yet acknowledged, oldest first (resumable sessions). */
  private retained: { seq: number; msg: Message }[] = [];
  /** When a detached session gives up. */
  private graceUntil: number | undefined;

  private lastCallId = 0;
  private pendingCalls = new Set<number>();
  private incomingCalls = new Set<number>();

  /** Pipes by our numbering (ours even, the peer's odd). */
  private pipes = new Map<number, PipeState>();
  private localOpened = 0;
  private remoteOpened = 0;
  private remoteOpenPipes = 0;

  constructor(now: number, options: SessionOptions = {}) {
    this.now = now;
    this.lastSent = now;
    this.lastReceived = now;
    this.hello = {
      nodeId: options.nodeId ?? randomBytes(16),
      features: (options.routing === false ? 0n : Feature.Routing) | ((options.resumeGraceMs ?? 0) > 0 ? Feature.Resume : 0n),
      sessionId: options.sessionId ?? randomU64(),
      auth: null,
      maxFrame: options.maxFrame ?? 65536,
      recvWindow: options.recvWindow ?? 64,
      pipeWindow: options.pipeWindow ?? 65536,
    };
    if (this.hello.nodeId.length !== 16) throw new SessionUsageError("node id must be 16 bytes");
    if (this.hello.maxFrame < MIN_MAX_FRAME || this.hello.recvWindow < 1 || this.hello.pipeWindow < 1) {
      throw new SessionUsageError("limits below the protocol minimums");
    }
    this.keepaliveMs = options.keepaliveMs ?? 2000;
    this.idleMs = options.idleMs ?? 6000;
    this.ackDelayMs = options.ackDelayMs ?? 10;
    this.maxPendingCalls = options.maxPendingCalls ?? 1024;
    this.maxPipes = options.maxPipes ?? 256;
    this.resumeGraceMs = options.resumeGraceMs ?? 0;
    this.send({ type: "hello", hello: this.hello });
  }

  get state(): SessionState {
    return this.stateValue;
  }

  /** The peer's Hello, once received. */
  get peer(): Hello | undefined {
    return this.peerHello;
  }

  /** Packets to send, in order; each is one frame on the link. */
  takeOutput(): Uint8Array[] {
    const o = this.output;
    this.output = [];
    return o;
  }

  /** Events for the application, in order. */
  takeEvents(): SessionEvent[] {
    const e = this.events;
    this.events = [];
    return e;
  }

  /** When the session next wants `tick`, or undefined when closed. */
  nextDeadline(): number | undefined {
    if (this.stateValue === "closed") return undefined;
    if (this.stateValue === "detached") return this.graceUntil;
    let d = this.lastReceived + this.idleMs;
    if (this.graceUntil !== undefined) d = Math.min(d, this.graceUntil);
    if (this.stateValue === "open") d = Math.min(d, this.lastSent + this.keepaliveMs);
    if (this.ackDue !== undefined) d = Math.min(d, this.ackDue);
    return d;
  }

  /** Runs the timers: delayed ack, keepalive, idle timeout, resume grace. */
  tick(now: number): void {
    this.now = Math.max(this.now, now);
    if (this.stateValue === "closed") return;
    if (this.graceUntil !== undefined && this.now >= this.graceUntil) {
      this.stateValue = "closed";
      this.events.push({
        type: "closed",
        code: undefined,
        message: `the link was lost and the session not resumed within its grace of ${this.resumeGraceMs} ms`,
        byPeer: false,
      });
      return;
    }
    if (this.stateValue === "detached") return;
    if (this.now >= this.lastReceived + this.idleMs) {
      if (this.isResumable()) {
        this.detach(`nothing received for ${this.idleMs} ms`);
        return;
      }
      this.fatal(CloseCode.IdleTimeout, `nothing received for ${this.idleMs} ms`);
      return;
    }
    if (this.ackDue !== undefined && this.now >= this.ackDue) {
      this.ackDue = undefined;
      this.send({ type: "ack", ack: this.recvAck });
    }
    if (this.stateValue === "open" && this.now >= this.lastSent + this.keepaliveMs) {
      this.send({ type: "ping" });
    }
  }

  /** Feeds one received frame (one packet). */
  receive(bytes: Uint8Array, now: number): void {
    this.now = Math.max(this.now, now);
    if (this.stateValue === "closed" || this.stateValue === "detached") return;
    if (bytes.length > this.hello.maxFrame) {
      this.fatal(CloseCode.FrameTooLarge, `frame of ${bytes.length} bytes above max_frame ${this.hello.maxFrame}`);
      return;
    }
    let p: Packet;
    try {
      p = decodePacket(bytes, this.hello.maxFrame);
    } catch (e) {
      const code = e instanceof PacketDecodeError ? e.closeCode : CloseCode.Decode;
      this.fatal(code, (e as Error).message);
      return;
    }
    this.lastReceived = this.now;
    this.onPacket(p);
  }

  /** Closes the session on purpose (Close code 0, or another code). */
  close(code: number = CloseCode.Normal, message = "closed"): void {
    if (this.stateValue === "closed") return;
    this.fatal(code, message);
  }

  /**
   * The link failed. A resumable session detaches (a `detached` event;
   * true is returned) and waits for `resume` until its grace ends; any
   * other session is closed without sending anything (false).
   */
  linkLost(message: string): boolean {
    if (this.stateValue === "closed") return false;
    if (this.isResumable()) {
      this.detach(message);
      return true;
    }
    this.stateValue = "closed";
    this.events.push({ type: "closed", code: undefined, message, byPeer: false });
    return false;
  }

  /** Whether a lost link detaches this session instead of closing it (both Hellos set RESUME). */
  isResumable(): boolean {
    return this.resumable && (this.stateValue === "open" || this.stateValue === "detached" || this.stateValue === "resuming");
  }

  /**
   * Continues a detached session on a new link: our resume Hello (§12.2)
   * is the first packet to send on it. The peer answers with its own
   * resume Hello (a `resumed` event; what it lacks is sent again), or with
   * Close code 12 `NoSession` (a `closed` event) when it no longer has the
   * session; then start a new Session.
   */
  resume(now: number): void {
    this.now = Math.max(this.now, now);
    if (!this.isResumable()) throw new SessionUsageError("the session cannot resume");
    if (this.stateValue !== "detached") this.detach("resumed on another link");
    const peer = this.peerHello as Hello;
    this.stateValue = "resuming";
    this.lastReceived = this.now;
    this.send({ type: "hello", hello: { ...this.hello, resume: { sessionId: peer.sessionId, ack: BigInt(this.recvAck) } } });
  }

  /** The session has no link: packets not yet sent are dropped (Data is retained and sent again on resumption). */
  private detach(reason: string): void {
    if (this.stateValue === "detached") return;
    this.stateValue = "detached";
    this.graceUntil ??= this.now + this.resumeGraceMs;
    this.output = [];
    this.ackDue = undefined;
    this.outOfOrder.clear();
    this.events.push({ type: "detached", reason });
  }

  // ---- application operations ----

  /** Announces one of our entries to the peer (§4.1). */
  announce(entry: EntryInfo): void {
    this.sendMessage({ type: "announce", entry });
  }

  /** Withdraws an entry announced earlier. */
  withdraw(entryId: number, reason: ExitReason = { code: 0, text: "" }): void {
    this.sendMessage({ type: "withdraw", entryId, reason });
  }

  /** Sends a Cast to the server `to` on the peer, with a trace context (`parseTraceparent`) if given. */
  cast(to: string, payload: Uint8Array, trace?: Uint8Array): void {
    this.sendMessage(trace ? { type: "cast", to, payload, trace: checkTrace(trace) } : { type: "cast", to, payload });
  }

  /** Sends a Call (with a trace context if given); returns its call id (the reply event carries it). */
  call(to: string, payload: Uint8Array, trace?: Uint8Array): number {
    const callId = this.lastCallId + 1;
    this.sendMessage(trace ? { type: "call", callId, to, payload, trace: checkTrace(trace) } : { type: "call", callId, to, payload });
    this.lastCallId = callId;
    this.pendingCalls.add(callId);
    return callId;
  }

  /** Forgets a call (timed out or aborted locally): a late reply is ignored. */
  cancelCall(callId: number): void {
    this.pendingCalls.delete(callId);
  }

  /** Answers a call from the peer, exactly once. */
  reply(callId: number, result: { ok: true; payload: Uint8Array } | { ok: false; kind: number; message: string }): void {
    if (!this.incomingCalls.has(callId)) throw new SessionUsageError(`no call ${callId} waiting for a reply`);
    const msg: Message = result.ok
      ? { type: "replyOk", callId, payload: result.payload }
      : { type: "replyErr", callId, kind: result.kind, message: result.message };
    try {
      this.sendMessage(msg);
    } catch (e) {
      if (!(e instanceof SessionUsageError) || !result.ok) throw e;
      // A reply too large for the peer still answers the call.
      this.sendMessage({ type: "replyErr", callId, kind: 5, message: e.message });
    }
    this.incomingCalls.delete(callId);
  }

  /** Opens a pipe to `port` of `server` on the peer; returns its id (ours, even). */
  openPipe(server: string, port: string): number {
    this.checkOpenOrEarly();
    const pipeId = 2 * this.localOpened;
    this.sendMessage({ type: "pipeOpen", pipeId, server, port });
    this.localOpened += 1;
    // Until the peer's Hello is known the credit is unknown: set at OPEN.
    this.pipes.set(pipeId, this.newPipe());
    return pipeId;
  }

  /** Bytes a pipe may send now (0 for a pipe that is gone). */
  credit(pipeId: number): number {
    return this.pipes.get(pipeId)?.sendCredit ?? 0;
  }

  /**
   * Sends one frame on a pipe, cut into PipeData pieces that fit the peer's
   * `max_frame`. Returns false (sending nothing) when the pipe lacks the
   * credit; a `pipeCredit` event says when to try again.
   */
  writeFrame(pipeId: number, frame: Uint8Array): boolean {
    const p = this.livePipe(pipeId);
    if (p.localEnded) throw new SessionUsageError("pipe already ended");
    const peer = this.peerHello;
    if (!peer) return false;
    if (frame.length > peer.pipeWindow) {
      throw new SessionUsageError(`frame of ${frame.length} bytes above the peer's pipe window ${peer.pipeWindow}`);
    }
    if (frame.length > p.sendCredit) return false;
    p.sendCredit -= frame.length;
    const piece = peer.maxFrame - PIPE_DATA_OVERHEAD;
    let off = 0;
    do {
      const end = Math.min(frame.length, off + piece);
      this.sendMessage({ type: "pipeData", pipeId, last: end === frame.length, data: frame.subarray(off, end) });
      off = end;
    } while (off < frame.length);
    return true;
  }

  /** Our reader consumed `bytes` of a pipe's frames: return the credit. */
  consumed(pipeId: number, bytes: number): void {
    const p = this.pipes.get(pipeId);
    if (!p || bytes <= 0 || this.stateValue === "closed") return;
    const n = Math.min(bytes, p.unreturned);
    if (n === 0) return;
    p.unreturned -= n;
    this.sendMessage({ type: "pipeCredit", pipeId, bytes: n });
  }

  /** Half-closes a pipe: we send no more frames on it. */
  endPipe(pipeId: number): void {
    const p = this.pipes.get(pipeId);
    if (!p || p.localEnded) return;
    p.localEnded = true;
    this.sendMessage({ type: "pipeEnd", pipeId });
    if (p.remoteEnded) this.endedBothWays(pipeId);
  }

  /** Both sides ended a pipe: close it (Normal) and report that. */
  private endedBothWays(pipeId: number): void {
    const reason = { code: 0, text: "" };
    this.closePipe(pipeId, reason);
    this.events.push({ type: "pipeClose", pipeId, reason });
  }

  /** Closes a pipe in both directions. */
  closePipe(pipeId: number, reason: ExitReason = { code: 0, text: "" }): void {
    if (!this.pipes.has(pipeId)) return;
    this.dropPipe(pipeId);
    if (this.stateValue !== "closed") this.sendMessage({ type: "pipeClose", pipeId, reason });
  }

  // ---- internals ----

  private newPipe(): PipeState {
    return {
      sendCredit: this.peerHello?.pipeWindow ?? 0,
      unreturned: 0,
      pieces: [],
      localEnded: false,
      remoteEnded: false,
    };
  }

  private dropPipe(pipeId: number): void {
    if (this.pipes.delete(pipeId) && pipeId % 2 === 1) this.remoteOpenPipes -= 1;
  }

  private livePipe(pipeId: number): PipeState {
    const p = this.pipes.get(pipeId);
    if (!p) throw new SessionUsageError(`pipe ${pipeId} is closed`);
    return p;
  }

  private checkOpenOrEarly(): void {
    if (this.stateValue === "closed") throw new SessionUsageError("session closed");
  }

  private send(p: Packet): void {
    this.output.push(encodePacket(p));
    this.lastSent = this.now;
  }

  private sendMessage(msg: Message): void {
    this.checkOpenOrEarly();
    if (this.stateValue === "handshake") {
      this.early.push(msg);
      return;
    }
    const peer = this.peerHello as Hello;
    const seq = this.nextSeq;
    const bytes = encodePacket({ type: "data", seq, ack: this.recvAck, msg });
    if (bytes.length > peer.maxFrame) {
      throw new SessionUsageError(`message of ${bytes.length} bytes above the peer's max_frame ${peer.maxFrame}`);
    }
    if (this.resumable) {
      if (this.retained.length >= RETAIN_MAX) {
        this.fatal(CloseCode.Limit, `the peer left ${RETAIN_MAX} packets unacknowledged`);
        throw new SessionUsageError("session closed");
      }
      this.retained.push({ seq, msg });
    }
    this.nextSeq += 1;
    // Detached or resuming: numbered and kept, sent once the session resumes.
    if (this.stateValue !== "open") return;
    this.ackDue = undefined;
    this.output.push(bytes);
    this.lastSent = this.now;
  }

  /** Close with a Close packet (best effort) and report it. */
  private fatal(code: number, message: string): void {
    if (this.stateValue === "closed") return;
    this.send({ type: "close", code, message });
    this.stateValue = "closed";
    this.events.push({ type: "closed", code, message, byPeer: false });
  }

  private onPacket(p: Packet): void {
    switch (p.type) {
      case "hello":
        return this.onHello(p.hello);
      case "helloAck":
        return;
      case "close":
        this.stateValue = "closed";
        this.events.push({ type: "closed", code: p.code, message: p.message, byPeer: true });
        return;
      case "handshake":
        this.fatal(CloseCode.Unauthorized, "this side is plaintext");
        return;
      default:
        break;
    }
    if (this.stateValue !== "open") return; // Data, Ack, Ping before the peer's Hello: dropped.
    switch (p.type) {
      case "ping":
        this.ackDue = undefined;
        this.send({ type: "ack", ack: this.recvAck });
        return;
      case "ack":
        this.onAck(p.ack);
        return;
      case "data":
        if (!this.onAck(p.ack)) return;
        this.onData(p.seq, p.msg);
        return;
    }
  }

  private onAck(ack: number): boolean {
    if (ack >= this.nextSeq) {
      this.fatal(CloseCode.Protocol, `ack ${ack} for an unsent packet`);
      return false;
    }
    if (ack > this.peerAcked) this.peerAcked = ack;
    this.dropRetained(ack);
    return true;
  }

  /** Forgets retained packets up to `ack`, which the peer has. */
  private dropRetained(ack: number): void {
    let n = 0;
    while (n < this.retained.length && (this.retained[n] as { seq: number }).seq <= ack) n += 1;
    if (n > 0) this.retained.splice(0, n);
  }

  /** A Hello on the new link of a resuming session (§12.2). */
  private onResumeHello(h: Hello): void {
    const peer = this.peerHello as Hello;
    const ours = h.resume?.sessionId === this.hello.sessionId;
    if (!sameBytes(peer.nodeId, h.nodeId) || peer.sessionId !== h.sessionId || !ours || !h.resume) {
      return; // the Hello of the fresh session the peer's node started on this link: ignored
    }
    this.send({ type: "helloAck", sessionId: h.sessionId });
    if (
      h.maxFrame !== peer.maxFrame ||
      h.recvWindow !== peer.recvWindow ||
      h.pipeWindow !== peer.pipeWindow ||
      h.features !== peer.features
    ) {
      this.fatal(CloseCode.Protocol, "cannot resume: the peer's limits or features changed");
      return;
    }
    const ack = h.resume.ack;
    const lowest = this.retained[0]?.seq ?? this.nextSeq;
    if (ack >= BigInt(this.nextSeq) || ack + 1n < BigInt(lowest)) {
      this.fatal(
        CloseCode.Protocol,
        `cannot resume: the peer acknowledges packet ${ack}, but packets ${lowest} to ${this.nextSeq - 1} are what it may lack`,
      );
      return;
    }
    this.dropRetained(Number(ack));
    if (Number(ack) > this.peerAcked) this.peerAcked = Number(ack);
    this.stateValue = "open";
    this.graceUntil = undefined;
    for (const r of this.retained) {
      this.output.push(encodePacket({ type: "data", seq: r.seq, ack: this.recvAck, msg: r.msg }));
    }
    this.lastSent = this.now;
    this.ackDue = this.now;
    this.events.push({ type: "resumed", resent: this.retained.length });
  }

  private onHello(h: Hello): void {
    if (this.stateValue === "resuming") {
      this.onResumeHello(h);
      return;
    }
    const peer = this.peerHello;
    if (peer) {
      if (sameBytes(peer.nodeId, h.nodeId) && peer.sessionId === h.sessionId) {
        this.send({ type: "helloAck", sessionId: h.sessionId });
      } else {
        this.fatal(CloseCode.Protocol, "new session over an open one");
      }
      return;
    }
    if (h.maxFrame < MIN_MAX_FRAME || h.recvWindow < 1 || h.pipeWindow < 1) {
      this.fatal(CloseCode.Protocol, "limits below the protocol minimums");
      return;
    }
    if ((h.features & Feature.Noise) !== 0n) {
      this.fatal(CloseCode.Unauthorized, "the peer encrypts (Noise); this side is plaintext");
      return;
    }
    if (h.resume) {
      this.fatal(CloseCode.NoSession, "this side does not resume sessions");
      return;
    }
    this.peerHello = h;
    this.resumable = (this.hello.features & h.features & Feature.Resume) !== 0n;
    this.send({ type: "helloAck", sessionId: h.sessionId });
    this.stateValue = "open";
    for (const p of this.pipes.values()) p.sendCredit = h.pipeWindow;
    this.events.push({ type: "connected", peer: h });
    const early = this.early;
    this.early = [];
    for (const m of early) {
      try {
        this.sendMessage(m);
      } catch (e) {
        if (!(e instanceof SessionUsageError)) throw e;
        if (m.type === "call") this.events.push({ type: "reply", callId: m.callId, ok: false, kind: 5, message: e.message });
      }
    }
  }

  private onData(seq: number, msg: Message): void {
    const expected = this.recvAck + 1;
    if (seq < expected || this.outOfOrder.has(seq)) {
      this.send({ type: "ack", ack: this.recvAck }); // duplicate: acknowledged at once
      return;
    }
    if (seq >= expected + this.hello.recvWindow) return; // beyond the window: dropped
    if (seq > expected) {
      this.outOfOrder.set(seq, msg);
      this.send({ type: "ack", ack: this.recvAck });
      return;
    }
    this.recvAck = seq;
    this.onMessage(msg);
    for (;;) {
      const next = this.outOfOrder.get(this.recvAck + 1);
      if (!next || this.stateValue === "closed") break;
      this.outOfOrder.delete(this.recvAck + 1);
      this.recvAck += 1;
      this.onMessage(next);
    }
    if (this.stateValue === "open" && this.ackDue === undefined) this.ackDue = this.now + this.ackDelayMs;
  }

  private onMessage(m: Message): void {
    if (this.stateValue !== "open") return;
    switch (m.type) {
      case "announce":
        this.events.push({ type: "announce", entry: m.entry });
        return;
      case "route": {
        // §13: refuse a path through this side, naming a node twice, or not ending with the peer.
        const ids = m.path.map((id) => id.join(","));
        const peer = (this.peerHello as Hello).nodeId;
        if (
          ids.includes(this.hello.nodeId.join(",")) ||
          new Set(ids).size !== ids.length ||
          !sameBytes(m.path[m.path.length - 1] as Uint8Array, peer)
        ) {
          return;
        }
        this.events.push({ type: "announce", entry: m.entry, route: { originId: m.originId, path: m.path, cost: m.cost } });
        return;
      }
      case "withdraw":
        this.events.push({ type: "withdraw", entryId: m.entryId, reason: m.reason });
        return;
      case "cast":
        this.events.push(m.trace ? { type: "cast", to: m.to, payload: m.payload, trace: m.trace } : { type: "cast", to: m.to, payload: m.payload });
        return;
      case "call":
        if (this.incomingCalls.has(m.callId)) {
          this.fatal(CloseCode.Protocol, `reused call id ${m.callId}`);
          return;
        }
        if (this.incomingCalls.size >= this.maxPendingCalls) {
          this.fatal(CloseCode.Limit, `more than ${this.maxPendingCalls} calls waiting`);
          return;
        }
        this.incomingCalls.add(m.callId);
        this.events.push(
          m.trace
            ? { type: "call", callId: m.callId, to: m.to, payload: m.payload, trace: m.trace }
            : { type: "call", callId: m.callId, to: m.to, payload: m.payload },
        );
        return;
      case "replyOk":
      case "replyErr":
        if (m.callId > this.lastCallId || m.callId === 0) {
          this.fatal(CloseCode.Protocol, `reply for call id ${m.callId}, never used`);
          return;
        }
        if (!this.pendingCalls.delete(m.callId)) return; // cancelled locally
        this.events.push(
          m.type === "replyOk"
            ? { type: "reply", callId: m.callId, ok: true, payload: m.payload }
            : { type: "reply", callId: m.callId, ok: false, kind: m.kind, message: m.message },
        );
        return;
      default:
        this.onPipeMessage(m);
    }
  }

  private onPipeMessage(m: Message & { pipeId: number }): void {
    const id = m.pipeId ^ 1; // our numbering (§4.3)
    if (m.type === "pipeOpen") {
      if (m.pipeId % 2 !== 0 || (id - 1) / 2 !== this.remoteOpened) {
        this.fatal(CloseCode.Protocol, `bad pipe open id ${m.pipeId}`);
        return;
      }
      this.remoteOpened += 1;
      if (this.remoteOpenPipes >= this.maxPipes) {
        this.sendMessage({ type: "pipeClose", pipeId: id, reason: { code: 1, text: "too many pipes" } });
        return;
      }
      this.pipes.set(id, this.newPipe());
      this.remoteOpenPipes += 1;
      this.events.push({ type: "pipeOpen", pipeId: id, server: m.server, port: m.port });
      return;
    }
    const n = id % 2 === 0 ? id / 2 : (id - 1) / 2;
    const opened = id % 2 === 0 ? this.localOpened : this.remoteOpened;
    if (n >= opened) {
      this.fatal(CloseCode.UnknownPipe, `pipe ${m.pipeId} never existed`);
      return;
    }
    const p = this.pipes.get(id);
    if (!p) return; // closed: messages that crossed are ignored
    switch (m.type) {
      case "pipeData": {
        if (p.remoteEnded) {
          this.fatal(CloseCode.Protocol, `pipe data after pipe end on pipe ${m.pipeId}`);
          return;
        }
        p.unreturned += m.data.length;
        if (p.unreturned > this.hello.pipeWindow) {
          this.fatal(CloseCode.FlowControl, `pipe ${m.pipeId} sent beyond its credit`);
          return;
        }
        p.pieces.push(m.data);
        if (m.last) {
          const frame = concat(p.pieces);
          p.pieces = [];
          this.events.push({ type: "pipeFrame", pipeId: id, frame });
        }
        return;
      }
      case "pipeCredit": {
        const peer = this.peerHello as Hello;
        if (p.sendCredit + m.bytes > peer.pipeWindow) {
          this.fatal(CloseCode.FlowControl, `credit on pipe ${m.pipeId} above the window`);
          return;
        }
        if (m.bytes === 0) return;
        p.sendCredit += m.bytes;
        this.events.push({ type: "pipeCredit", pipeId: id, credit: p.sendCredit });
        return;
      }
      case "pipeEnd":
        if (p.remoteEnded) return;
        p.remoteEnded = true;
        this.events.push({ type: "pipeEnd", pipeId: id });
        if (p.localEnded) this.endedBothWays(id);
        return;
      case "pipeClose":
        this.dropPipe(id);
        this.events.push({ type: "pipeClose", pipeId: id, reason: m.reason });
        return;
    }
  }
}

function checkTrace(t: Uint8Array): Uint8Array {
  if (!validTrace(t)) throw new SessionUsageError("a trace context is 25 bytes with non-zero trace-id and parent-id");
  return t;
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

function concat(parts: Uint8Array[]): Uint8Array {
  if (parts.length === 1) return parts[0] as Uint8Array;
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}
