/**
 * The public API: a connection to one oscloud node, which is itself a small
 * node (it can serve). It drives a sans-IO Session over a Transport.
 */
import { Decoder, Encoder } from "@msgpack/msgpack";
import {
  CloseCode,
  ErrorKind,
  formatTraceparent,
  parseTraceparent,
  type Capabilities,
  type EntryInfo,
  type ExitReason,
  type Port,
} from "./codec.js";
import {
  AbortedError,
  ConnectError,
  NotFoundError,
  OscloudError,
  PayloadError,
  RemoteError,
  SessionClosedError,
  SessionResetError,
  TimeoutError,
  TooLargeError,
} from "./errors.js";
import { Pipe, type PipeHost } from "./pipe.js";
import { AsyncQueue } from "./queue.js";
import { Session, SessionUsageError, type SessionEvent, type SessionOptions } from "./session.js";
import { WebSocketTransport, type Transport, type WebSocketFactory } from "./transport.js";

/** `timeout` (ms) and `signal` accepted by every operation that waits. */
export interface WaitOptions {
  timeout?: number;
  signal?: AbortSignal;
}

/** How the client links again after losing its link (PROTOCOL.md §12). */
export interface ReconnectOptions {
  /** The first wait between attempts that do not lead to a working session, ms [50]. */
  minDelayMs?: number;
  /** The longest wait: the wait doubles up to it, ms [5000]. */
  maxDelayMs?: number;
}

/** Options of `connect`. */
export interface ConnectOptions extends SessionOptions, WaitOptions {
  /** Makes the WebSocket (default: the global `WebSocket`). */
  wsFactory?: WebSocketFactory;
  /**
   * Link again when the link is lost [true]: the session resumes if the
   * node keeps it (its Hello sets `RESUME`), else a new session starts.
   * `false`: a lost link ends the client (`closed`). `timeout` bounds each
   * attempt; `resumeGraceMs` (default 30 000 with reconnection) is how
   * long this side keeps a session whose link is lost.
   */
  reconnect?: boolean | ReconnectOptions;
  /**
   * Opens a new link for reconnection (`connect` passes one that opens the
   * same URL; give one to `Client.start` to reconnect over another transport).
   */
  dial?: () => Promise<Transport>;
}

/** Default `resumeGraceMs` of a client that reconnects. */
export const DEFAULT_RESUME_GRACE_MS = 30_000;

/** What happened to the client's link, as `on` reports it. */
export type ClientEvent =
  /** The link is lost; the client dials again (`resuming`: the session is kept for resumption). */
  | { type: "disconnected"; reason: string; resuming: boolean }
  /** The session continues on a new link: nothing was lost; `resent` packets went again. */
  | { type: "resumed"; resent: number }
  /**
   * The session could not be resumed and a new one runs on a new link:
   * calls, pipes and casts in flight on the old one were failed with
   * `error` (or are unknown, for casts); served names are announced again;
   * `watch` reports the old entries down and the new ones up.
   */
  | { type: "reset"; error: SessionResetError };

/** A server known to the connection: announced by the peer node. */
export interface Entry {
  /** The peer's id for the entry. */
  entryId: number;
  name: string;
  capabilities: Capabilities;
  group: boolean;
  /** Hex node id of the node the server runs on (the peer, or path[0] of a route). */
  node: string;
  /** The pipe ports it declares (empty: none declared). */
  ports: Port[];
}

/** A change in the peer's registry, as `watch` reports it. */
export type RegistryChange = { type: "up"; entry: Entry } | { type: "down"; entry: Entry; reason: ExitReason };

/** Options of `call` and `cast`. */
export interface PayloadOptions {
  /** Send the request as the given bytes and return the reply bytes, without MessagePack. */
  raw?: boolean;
}

/** Options of `call` and `cast` beyond the payload's. */
export interface SendOptions extends PayloadOptions {
  /**
   * The W3C Trace Context `traceparent` header of the caller's span
   * (`00-<32 hex trace-id>-<16 hex parent-id>-<2 hex flags>`): sent as the
   * message's trace context, which the node passes on to the server. One
   * that is not valid is not sent (as W3C Trace Context treats an invalid
   * header: no context).
   */
  traceparent?: string;
}

/** What a handler learns about a call or cast besides its payload. */
export interface MessageInfo {
  /** The hex node id of the peer node that delivered it. */
  from: string;
  /** The sender's trace context as a version 00 `traceparent`, when it sent one. */
  traceparent?: string;
}

/** What a served name does; every part is optional. */
export interface Handler {
  /** Answers a call; a throw answers ReplyErr kind 5 (Failed) with its message. */
  call?(request: unknown, info: MessageInfo): unknown | Promise<unknown>;
  /** Takes a cast. */
  cast?(message: unknown, info: MessageInfo): void;
  /** Takes a pipe the peer opened to `port`. */
  pipe?(port: string, pipe: Pipe): void;
}

/** Options of `serve`. */
export interface ServeOptions extends PayloadOptions {
  capabilities?: Partial<Capabilities>;
  group?: boolean;
}

/** A name this connection serves; `close()` withdraws it. */
export interface Served {
  readonly name: string;
  close(): void;
}

const DEFAULT_TIMEOUT = 10_000;
/** Pipe writers wait while the link has more than this many bytes queued (as zenoh-ts does). */
export const LINK_HIGH_WATER = 1 << 20;
/** How often a waiting pipe writer looks at the link's queue again, ms. */
const DRAIN_POLL_MS = 5;

const payloadEncoder = new Encoder({ useBigInt64: true });

function hex(b: Uint8Array): string {
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

/** Connects to the node at a `ws://` or `wss://` URL and waits for the Hello exchange. */
export async function connect(url: string, options: ConnectOptions = {}): Promise<Client> {
  const transport = await withDeadline(
    WebSocketTransport.open(url, { wsFactory: options.wsFactory, signal: options.signal }),
    options,
    () => {},
    `connecting to ${url}`,
  );
  const dial = () =>
    withDeadline(
      WebSocketTransport.open(url, { wsFactory: options.wsFactory }),
      { timeout: options.timeout },
      () => {},
      `connecting to ${url}`,
    );
  try {
    return await Client.start(transport, { dial, ...options });
  } catch (e) {
    transport.close();
    throw e;
  }
}

/** One connection (one session with one peer node). */
export class Client {
  /** Our node id (hex). */
  readonly nodeId: string;
  /** Resolves when the session ends, with why. */
  readonly closed: Promise<SessionClosedError>;

  private session: Session;
  /** The current link; undefined while there is none. */
  private transport: Transport | undefined;
  private readonly sessionOptions: SessionOptions;
  private readonly dial: (() => Promise<Transport>) | undefined;
  private readonly reconnect: { minDelayMs: number; maxDelayMs: number } | undefined;
  /** The next wait before dialling; 0 right after a working session. */
  private redialDelay = 0;
  private redialing = false;
  /** Ends the wait before the next dial (`close()` calls it). */
  private stopWaiting: (() => void) | undefined;
  /** "disconnected" was reported and the link is not back yet. */
  private linkDown = false;
  /** The first session connected (later closes reconnect). */
  private connectedOnce = false;
  /** `close()` was called. */
  private closing = false;
  /** Why the last session was replaced, reported with "reset" once the new one is up. */
  private resetError: SessionResetError | undefined;
  private listeners = new Map<ClientEvent["type"], Set<(ev: never) => void>>();
  private pipeHost: PipeHost;
  private readonly payloadDecoder: Decoder;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private timerAt = Infinity;
  private closeError: SessionClosedError | undefined;
  private resolveClosed!: (e: SessionClosedError) => void;
  private onConnected: ((e?: Error) => void) | undefined;

  private entries = new Map<number, Entry>();
  private watchers = new Set<{ name: string | undefined; queue: AsyncQueue<RegistryChange> }>();
  private calls = new Map<number, { resolve: (p: Uint8Array) => void; reject: (e: Error) => void }>();
  private pipes = new Map<number, Pipe>();
  private served = new Map<string, { entry: EntryInfo; handler: Handler; raw: boolean }>();
  private nextEntryId = 1;
  private driving = false;
  private drainTimer: ReturnType<typeof setTimeout> | undefined;

  private constructor(transport: Transport, options: ConnectOptions) {
    this.transport = transport;
    this.dial = options.dial;
    if (options.dial && options.reconnect !== false) {
      const r = typeof options.reconnect === "object" ? options.reconnect : {};
      this.reconnect = { minDelayMs: r.minDelayMs ?? 50, maxDelayMs: r.maxDelayMs ?? 5000 };
    }
    this.sessionOptions = {
      ...options,
      resumeGraceMs: options.resumeGraceMs ?? (this.reconnect ? DEFAULT_RESUME_GRACE_MS : 0),
    };
    this.session = new Session(performance.now(), this.sessionOptions);
    this.pipeHost = this.makePipeHost(this.session);
    this.nodeId = hex(this.session.hello.nodeId);
    const max = this.session.hello.maxFrame;
    this.payloadDecoder = new Decoder({
      useBigInt64: true,
      maxStrLength: max,
      maxBinLength: max,
      maxArrayLength: max,
      maxMapLength: max,
      maxExtLength: max,
    });
    this.closed = new Promise((r) => (this.resolveClosed = r));
  }

  /**
   * Runs a session over an open transport (a WebSocket, or anything that
   * carries whole packets); with `dial` it reconnects (`reconnect`).
   */
  static async start(transport: Transport, options: ConnectOptions = {}): Promise<Client> {
    const c = new Client(transport, options);
    const connected = new Promise<void>((resolve, reject) => {
      c.onConnected = (e) => (e ? reject(e) : resolve());
    });
    c.attach(transport);
    await withDeadline(connected, options, () => c.close(), "the Hello exchange");
    return c;
  }

  /**
   * Listens to the link's events: `disconnected`, `resumed`, `reset`.
   * Returns a function that removes the listener.
   */
  on<T extends ClientEvent["type"]>(type: T, listener: (ev: Extract<ClientEvent, { type: T }>) => void): () => void {
    let set = this.listeners.get(type);
    if (!set) this.listeners.set(type, (set = new Set()));
    set.add(listener as (ev: never) => void);
    return () => set.delete(listener as (ev: never) => void);
  }

  /** Whether the client has a working link now (false while it reconnects). */
  get linked(): boolean {
    return !this.linkDown && this.closeError === undefined;
  }

  /** The peer's node id (hex). */
  get peerNodeId(): string {
    const p = this.session.peer;
    return p ? hex(p.nodeId) : "";
  }

  /** The servers the peer announced, now. */
  list(): Entry[] {
    return [...this.entries.values()];
  }

  /** Finds a server by name, waiting for its announcement up to `timeout` (NotFoundError then). */
  async lookup(name: string, options: WaitOptions = {}): Promise<Entry> {
    this.checkOpen();
    const now = this.find(name);
    if (now) return now;
    const q = this.addWatcher(name);
    try {
      return await withDeadline(
        (async () => {
          for await (const ch of q) if (ch.type === "up") return ch.entry;
          throw this.closeError ?? new NotFoundError(`${name} not found`);
        })(),
        options,
        () => {},
        `looking up ${name}`,
        () => new NotFoundError(`${name} not found within ${options.timeout ?? DEFAULT_TIMEOUT} ms`),
      );
    } finally {
      await q.return();
    }
  }

  /**
   * Reports the registry's changes (for one name, or all): first an `up`
   * for every entry known now, then each change, until the signal aborts,
   * the loop breaks or the session closes.
   */
  watch(name?: string, options: { signal?: AbortSignal } = {}): AsyncIterableIterator<RegistryChange> {
    const q = this.addWatcher(name);
    for (const e of this.entries.values()) if (name === undefined || e.name === name) q.push({ type: "up", entry: e });
    if (this.closeError) q.end();
    options.signal?.addEventListener("abort", () => void q.return(), { once: true });
    return q;
  }

  /** Calls the server `to` on the peer; resolves with its reply. */
  async call<T = unknown>(to: string, request: unknown, options: WaitOptions & SendOptions = {}): Promise<T> {
    this.checkOpen();
    const payload = this.encodePayload(request, options.raw);
    const trace = options.traceparent === undefined ? undefined : parseTraceparent(options.traceparent);
    let callId = 0;
    const session = this.session;
    const reply = new Promise<Uint8Array>((resolve, reject) => {
      this.drive(() => {
        try {
          callId = session.call(to, payload, trace);
        } catch (e) {
          reject(usageError(e));
          return;
        }
        this.calls.set(callId, { resolve, reject });
      });
    });
    const bytes = await withDeadline(reply, options, () => {
      if (this.session !== session) return;
      this.calls.delete(callId);
      session.cancelCall(callId);
    }, `call to ${to}`);
    return (options.raw ? bytes : this.decodePayload(bytes)) as T;
  }

  /** Sends a one-way message to the server `to` on the peer. */
  cast(to: string, message: unknown, options: SendOptions = {}): void {
    this.checkOpen();
    const payload = this.encodePayload(message, options.raw);
    const trace = options.traceparent === undefined ? undefined : parseTraceparent(options.traceparent);
    this.drive(() => {
      try {
        this.session.cast(to, payload, trace);
      } catch (e) {
        throw usageError(e);
      }
    });
  }

  /** Opens a pipe to `port` of `server` on the peer. A refusal closes it with a PipeClosedError. */
  openPipe(server: string, port: string): Pipe {
    this.checkOpen();
    let pipe: Pipe | undefined;
    this.drive(() => {
      const id = this.session.openPipe(server, port);
      pipe = new Pipe(this.pipeHost, id);
      this.pipes.set(id, pipe);
    });
    return pipe as Pipe;
  }

  /** Serves `name` to the peer node: announces it and answers its calls with `handler`. */
  serve(name: string, handler: (request: unknown) => unknown, options?: ServeOptions): Served;
  /** Serves `name` to the peer node: announces it and answers its calls, casts and pipes. */
  serve(name: string, handler: Handler, options?: ServeOptions): Served;
  serve(name: string, handler: Handler | ((request: unknown) => unknown), options: ServeOptions = {}): Served {
    this.checkOpen();
    if (this.served.has(name)) throw new OscloudError(`${name} is already served on this connection`);
    const h: Handler = typeof handler === "function" ? { call: handler } : handler;
    const entryId = this.nextEntryId++;
    const c = options.capabilities ?? {};
    const entry: EntryInfo = {
      entryId,
      name,
      group: options.group ?? false,
      capabilities: {
        accepts: c.accepts ?? [],
        produces: c.produces ?? [],
        features: c.features ?? [],
        metadata: c.metadata ?? {},
        ports: c.ports ?? [],
      },
    };
    this.served.set(name, { entry, handler: h, raw: options.raw ?? false });
    this.drive(() => this.session.announce(entry));
    return {
      name,
      close: () => {
        const s = this.served.get(name);
        if (!s || s.entry.entryId !== entryId) return;
        this.served.delete(name);
        if (this.session.state !== "closed") this.drive(() => this.session.withdraw(entryId));
      },
    };
  }

  /** Closes the session (Close code 0) and the link; no reconnection follows. */
  async close(): Promise<void> {
    this.closing = true;
    this.stopWaiting?.();
    this.drive(() => this.session.close(CloseCode.Normal, "client closed"));
    await this.closed;
  }

  // ---- the driver ----

  /** What the pipes of `session` use; a no-op once another session replaced it. */
  private makePipeHost(session: Session): PipeHost {
    const live = () => this.session === session;
    return {
      writeFrame: (id, frame) => {
        if (!live()) return false;
        if ((this.transport?.bufferedAmount ?? 0) > LINK_HIGH_WATER) {
          this.waitForDrain();
          return false;
        }
        let ok = false;
        this.drive(() => {
          try {
            ok = session.writeFrame(id, frame);
          } catch (e) {
            throw usageError(e);
          }
        });
        return ok;
      },
      peerWindow: () => session.peer?.pipeWindow ?? Infinity,
      consumed: (id, n) => live() && this.drive(() => session.consumed(id, n)),
      endPipe: (id) => live() && this.drive(() => session.endPipe(id)),
      closePipe: (id, reason) =>
        live() &&
        this.drive(() => {
          this.pipes.delete(id);
          session.closePipe(id, reason);
        }),
    };
  }

  /** Runs the session on a new link: a detached session resumes on it, a new one says Hello. */
  private attach(t: Transport): void {
    this.transport = t;
    this.drive(() => {
      if (this.session.state === "detached") this.session.resume(performance.now());
    });
    t.start(
      (f) => {
        if (this.transport === t) this.drive(() => this.session.receive(f, performance.now()));
      },
      (reason) => {
        if (this.transport !== t) return;
        this.transport = undefined;
        this.drive(() => this.session.linkLost(`link lost: ${reason}`));
      },
    );
  }

  /** Drops the current link, if any. */
  private dropLink(): void {
    const t = this.transport;
    this.transport = undefined;
    t?.close();
  }

  private emit(ev: ClientEvent): void {
    for (const l of this.listeners.get(ev.type) ?? []) {
      try {
        (l as (ev: ClientEvent) => void)(ev);
      } catch {
        // a failing listener has no one to tell
      }
    }
  }

  private linkLost(reason: string, resuming: boolean): void {
    this.dropLink();
    if (!this.linkDown) {
      this.linkDown = true;
      this.emit({ type: "disconnected", reason, resuming });
    }
    this.redial();
  }

  /** Dials until a link opens (backoff from `minDelayMs` doubling to `maxDelayMs`), then attaches it. */
  private redial(): void {
    const r = this.reconnect;
    const dial = this.dial;
    if (this.redialing || !r || !dial) return;
    this.redialing = true;
    void (async () => {
      try {
        while (!this.closing && this.closeError === undefined) {
          const delay = this.redialDelay;
          this.redialDelay = Math.min(Math.max(r.minDelayMs, delay * 2), r.maxDelayMs);
          if (delay > 0) {
            await new Promise<void>((res) => {
              const timer = setTimeout(res, delay);
              this.stopWaiting = () => {
                clearTimeout(timer);
                res();
              };
            });
            this.stopWaiting = undefined;
          }
          if (this.closing || this.closeError !== undefined) return;
          let t: Transport;
          try {
            t = await dial();
          } catch {
            continue;
          }
          if (this.closing || this.closeError !== undefined) {
            t.close();
            return;
          }
          this.redialing = false;
          this.attach(t);
          return;
        }
      } finally {
        this.redialing = false;
      }
    })();
  }

  /**
   * The session ended and the client reconnects: fail what was in flight
   * with a SessionResetError, start a new session (same node id), announce
   * the served names again, and dial.
   */
  private resetSession(closed: SessionClosedError): void {
    const err = new SessionResetError(
      `the session was lost and a new one started (${closed.message}); a call in flight may or may not have run`,
      closed.code,
      { cause: closed },
    );
    this.resetError = err;
    for (const c of this.calls.values()) c.reject(err);
    this.calls.clear();
    for (const p of this.pipes.values()) p.onClose({ code: 2, text: closed.message }, err);
    this.pipes.clear();
    const gone = [...this.entries.values()];
    this.entries.clear();
    for (const entry of gone) this.notify({ type: "down", entry, reason: { code: 2, text: closed.message } });
    this.session = new Session(performance.now(), { ...this.sessionOptions, nodeId: this.session.hello.nodeId });
    this.pipeHost = this.makePipeHost(this.session);
    for (const s of this.served.values()) this.session.announce(s.entry);
    this.linkLost(closed.message, false);
  }

  /**
   * The link's send queue is above LINK_HIGH_WATER: the WebSocket API has
   * no drain event, so look again shortly and let the pipe writers retry.
   */
  private waitForDrain(): void {
    if (this.drainTimer !== undefined) return;
    this.drainTimer = setTimeout(() => {
      this.drainTimer = undefined;
      for (const p of this.pipes.values()) p.onCredit();
    }, DRAIN_POLL_MS);
  }

  /**
   * Runs `f` against the session, then sends its output, dispatches its
   * events and re-arms the timer. Re-entrant calls (from event handlers)
   * run inline and the outermost one flushes.
   */
  private drive(f: () => void): void {
    if (this.driving) {
      f();
      return;
    }
    this.driving = true;
    try {
      f();
      for (;;) {
        // Without a link the packets wait in the session (a new session's Hello).
        const out = this.transport ? this.session.takeOutput() : [];
        for (const frame of out) this.transport?.send(frame);
        const events = this.session.takeEvents();
        if (out.length === 0 && events.length === 0) break;
        for (const ev of events) this.onEvent(ev);
      }
    } finally {
      this.driving = false;
    }
    this.arm();
  }

  private arm(): void {
    const at = this.session.nextDeadline();
    if (at === undefined) {
      if (this.timer !== undefined) clearTimeout(this.timer);
      this.timer = undefined;
      this.timerAt = Infinity;
      return;
    }
    if (this.timer !== undefined && this.timerAt <= at) return;
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timerAt = at;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.timerAt = Infinity;
      this.drive(() => this.session.tick(performance.now()));
    }, Math.max(0, at - performance.now()));
    // Node: the keepalive timer alone does not keep the process running.
    (this.timer as { unref?: () => void }).unref?.();
  }

  private onEvent(ev: SessionEvent): void {
    switch (ev.type) {
      case "connected":
        this.onConnected?.();
        this.onConnected = undefined;
        if (this.connectedOnce) {
          this.linkDown = false;
          this.redialDelay = 0;
          if (this.resetError) this.emit({ type: "reset", error: this.resetError });
          this.resetError = undefined;
        }
        this.connectedOnce = true;
        return;
      case "detached":
        this.linkLost(ev.reason, true);
        return;
      case "resumed":
        this.linkDown = false;
        this.redialDelay = 0;
        this.emit({ type: "resumed", resent: ev.resent });
        for (const p of this.pipes.values()) p.onCredit();
        return;
      case "announce": {
        const entry: Entry = {
          entryId: ev.entry.entryId,
          name: ev.entry.name,
          capabilities: ev.entry.capabilities,
          group: ev.entry.group,
          ports: ev.entry.capabilities.ports ?? [],
          node: ev.route ? hex(ev.route.path[0] as Uint8Array) : this.peerNodeId,
        };
        this.entries.set(entry.entryId, entry);
        this.notify({ type: "up", entry });
        return;
      }
      case "withdraw": {
        const entry = this.entries.get(ev.entryId);
        if (!entry) return;
        this.entries.delete(ev.entryId);
        this.notify({ type: "down", entry, reason: ev.reason });
        return;
      }
      case "reply": {
        const c = this.calls.get(ev.callId);
        if (!c) return;
        this.calls.delete(ev.callId);
        if (ev.ok) c.resolve(ev.payload);
        else c.reject(new RemoteError(ev.kind, ev.message));
        return;
      }
      case "call":
        return this.onCall(ev.callId, ev.to, ev.payload, this.info(ev.trace));
      case "cast":
        return this.onCast(ev.to, ev.payload, this.info(ev.trace));
      case "pipeOpen":
        return this.onPipeOpen(ev.pipeId, ev.server, ev.port);
      case "pipeFrame":
        this.pipes.get(ev.pipeId)?.onFrame(ev.frame);
        return;
      case "pipeCredit":
        this.pipes.get(ev.pipeId)?.onCredit();
        return;
      case "pipeEnd":
        this.pipes.get(ev.pipeId)?.onEnd();
        return;
      case "pipeClose": {
        const p = this.pipes.get(ev.pipeId);
        this.pipes.delete(ev.pipeId);
        p?.onClose(ev.reason);
        return;
      }
      case "closed":
        return this.onClosed(ev.code, ev.message, ev.byPeer);
    }
  }

  private info(trace: Uint8Array | undefined): MessageInfo {
    const from = this.peerNodeId;
    return trace ? { from, traceparent: formatTraceparent(trace) } : { from };
  }

  private onCall(callId: number, to: string, payload: Uint8Array, info: MessageInfo): void {
    const s = this.served.get(to);
    if (!s?.handler.call) {
      this.session.reply(callId, { ok: false, kind: ErrorKind.NotFound, message: `no server ${to}` });
      return;
    }
    let request: unknown;
    try {
      request = s.raw ? payload : this.decodePayload(payload);
    } catch (e) {
      this.session.reply(callId, { ok: false, kind: ErrorKind.Decode, message: (e as Error).message });
      return;
    }
    const session = this.session;
    const handler = s.handler.call.bind(s.handler);
    void (async () => {
      let result: { ok: true; payload: Uint8Array } | { ok: false; kind: number; message: string };
      try {
        const value = await handler(request, info);
        result = { ok: true, payload: this.encodePayload(value, s.raw) };
      } catch (e) {
        result = { ok: false, kind: ErrorKind.Failed, message: e instanceof Error ? e.message : String(e) };
      }
      // Detached: the reply waits in the session for the next link.
      if (this.session === session && session.state !== "closed") this.drive(() => session.reply(callId, result));
    })();
  }

  private onCast(to: string, payload: Uint8Array, info: MessageInfo): void {
    const s = this.served.get(to);
    if (!s?.handler.cast) return; // casts to unknown names are dropped (§4.2)
    try {
      s.handler.cast(s.raw ? payload : this.decodePayload(payload), info);
    } catch {
      // a failing cast handler has no one to tell
    }
  }

  private onPipeOpen(pipeId: number, server: string, port: string): void {
    const s = this.served.get(server);
    if (!s?.handler.pipe) {
      this.session.closePipe(pipeId, { code: 1, text: `no server ${server} with port ${port}` });
      return;
    }
    const pipe = new Pipe(this.pipeHost, pipeId);
    this.pipes.set(pipeId, pipe);
    try {
      s.handler.pipe(port, pipe);
    } catch (e) {
      pipe.close({ code: 1, text: e instanceof Error ? e.message : String(e) });
    }
  }

  private onClosed(code: number | undefined, message: string, byPeer: boolean): void {
    const err = new SessionClosedError(
      code === undefined
        ? `session closed: ${message}`
        : byPeer
          ? `closed by the peer (code ${code}): ${message}`
          : `session closed (code ${code}): ${message}`,
      code,
    );
    this.dropLink();
    // A node that refuses this client for good (wrong version, magic, or it wants encryption) is not dialled again.
    const lasting = byPeer && (code === CloseCode.Version || code === CloseCode.BadMagic || code === CloseCode.Unauthorized);
    if (this.reconnect && this.connectedOnce && !this.closing && !lasting) {
      this.resetSession(err);
      return;
    }
    this.closeError = err;
    this.onConnected?.(new ConnectError(`the session closed during the Hello exchange: ${message}`, { cause: err }));
    this.onConnected = undefined;
    for (const c of this.calls.values()) c.reject(err);
    this.calls.clear();
    for (const p of this.pipes.values()) p.onClose({ code: 2, text: message }, err);
    this.pipes.clear();
    for (const w of this.watchers) w.queue.end();
    this.watchers.clear();
    this.resolveClosed(err);
  }

  // ---- helpers ----

  private find(name: string): Entry | undefined {
    for (const e of this.entries.values()) if (e.name === name) return e;
    return undefined;
  }

  private addWatcher(name: string | undefined): AsyncQueue<RegistryChange> {
    const w = { name, queue: undefined as unknown as AsyncQueue<RegistryChange> };
    w.queue = new AsyncQueue<RegistryChange>(() => this.watchers.delete(w));
    if (this.closeError) w.queue.end();
    else this.watchers.add(w);
    return w.queue;
  }

  private notify(ch: RegistryChange): void {
    for (const w of this.watchers) if (w.name === undefined || w.name === ch.entry.name) w.queue.push(ch);
  }

  private checkOpen(): void {
    if (this.closeError) throw this.closeError;
  }

  private encodePayload(value: unknown, raw: boolean | undefined): Uint8Array {
    if (raw) {
      if (!(value instanceof Uint8Array)) throw new PayloadError("a raw payload must be a Uint8Array");
      return value;
    }
    try {
      return payloadEncoder.encode(value).slice();
    } catch (e) {
      throw new PayloadError(`cannot encode the payload as MessagePack: ${(e as Error).message}`, { cause: e });
    }
  }

  private decodePayload(bytes: Uint8Array): unknown {
    try {
      return this.payloadDecoder.decode(bytes);
    } catch (e) {
      throw new PayloadError(`the payload is not MessagePack: ${(e as Error).message}`, { cause: e });
    }
  }
}

function usageError(e: unknown): Error {
  if (e instanceof SessionUsageError) {
    return /above/.test(e.message) ? new TooLargeError(e.message, { cause: e }) : new OscloudError(e.message, { cause: e });
  }
  return e as Error;
}

/**
 * Waits for `p` with a timeout (default 10 s; 0 or Infinity for none) and
 * an AbortSignal; on either, runs `cancel` and rejects with TimeoutError or
 * AbortedError.
 */
export function withDeadline<T>(
  p: Promise<T>,
  options: WaitOptions,
  cancel: () => void,
  what: string,
  onTimeout?: () => Error,
): Promise<T> {
  const { signal } = options;
  const timeout = options.timeout ?? DEFAULT_TIMEOUT;
  if (signal?.aborted) {
    cancel();
    return Promise.reject(new AbortedError(`${what} aborted`, { cause: signal.reason }));
  }
  return new Promise<T>((resolve, reject) => {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const onAbort = () => {
      done();
      cancel();
      reject(new AbortedError(`${what} aborted`, { cause: signal?.reason }));
    };
    const done = () => {
      if (timer !== undefined) clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
    };
    if (timeout > 0 && Number.isFinite(timeout)) {
      timer = setTimeout(() => {
        done();
        cancel();
        reject(onTimeout?.() ?? new TimeoutError(`${what} timed out after ${timeout} ms`));
      }, timeout);
    }
    signal?.addEventListener("abort", onAbort, { once: true });
    p.then(
      (v) => {
        done();
        resolve(v);
      },
      (e) => {
        done();
        reject(e);
      },
    );
  });
}
