/**
 * The WebSocket link: one oscloud packet per binary WebSocket message, no
 * prefix (docs/PROTOCOL.md §2, WebSocket links). The standard `WebSocket`
 * (browsers, Node ≥ 22) is enough; on Node 20 inject the `ws` package's
 * class through `wsFactory`.
 */
import { ConnectError } from "./errors.js";

/**
 * The part of the standard WebSocket this package uses. The handlers take
 * `any` so that other implementations (the `ws` package) fit as they are;
 * this package reads `data` of a message and `code`/`reason` of a close.
 */
export interface WebSocketLike {
  binaryType: string;
  readonly readyState: number;
  readonly bufferedAmount: number;
  onopen: ((ev: any) => void) | null;
  onmessage: ((ev: any) => void) | null;
  onclose: ((ev: any) => void) | null;
  onerror: ((ev: any) => void) | null;
  send(data: Uint8Array): void;
  close(code?: number, reason?: string): void;
}

/** Makes a WebSocket for a URL, e.g. `(url) => new WebSocket(url)` with the `ws` package. */
export type WebSocketFactory = (url: string) => WebSocketLike;

/** A link that carries whole packets. */
export interface Transport {
  /** Sends one packet. */
  send(frame: Uint8Array): void;
  /** Bytes given to `send` and not yet written to the network. */
  readonly bufferedAmount: number;
  /** Closes the link (nothing more is delivered). */
  close(): void;
  /**
   * Starts delivery: `onFrame` gets every packet received (including any
   * that arrived before this call), `onClose` is called once when the link
   * is gone, with why.
   */
  start(onFrame: (frame: Uint8Array) => void, onClose: (reason: string) => void): void;
}

const OPEN = 1;

function defaultFactory(url: string): WebSocketLike {
  const WS = (globalThis as { WebSocket?: new (url: string) => WebSocketLike }).WebSocket;
  if (!WS) {
    throw new ConnectError(
      "no global WebSocket in this runtime (Node < 22): pass wsFactory, e.g. (url) => new WebSocket(url) from the ws package",
    );
  }
  return new WS(url);
}

/** A Transport over one WebSocket. */
export class WebSocketTransport implements Transport {
  private onFrame: ((frame: Uint8Array) => void) | undefined;
  private onClose: ((reason: string) => void) | undefined;
  /** What arrived before `start` (a peer's Hello can come with the handshake's last bytes). */
  private early: Uint8Array[] = [];
  private goneReason: string | undefined;
  private closed = false;

  private constructor(private readonly ws: WebSocketLike) {
    ws.onmessage = (ev: { data: unknown }) => {
      if (this.closed) return;
      const d = ev.data;
      if (d instanceof ArrayBuffer) this.deliver(new Uint8Array(d));
      else if (ArrayBuffer.isView(d)) this.deliver(new Uint8Array(d.buffer, d.byteOffset, d.byteLength));
      else {
        // A text message is not an oscloud frame (1003: unsupported data).
        this.fail("text message on an oscloud link", 1003);
      }
    };
    ws.onclose = (ev: { code: number; reason: string }) => this.gone(`WebSocket closed (${ev.code}${ev.reason ? `: ${ev.reason}` : ""})`);
    ws.onerror = () => this.gone("WebSocket error");
  }

  /** Opens a WebSocket to `url` and waits until it is open. */
  static open(url: string, options: { wsFactory?: WebSocketFactory; signal?: AbortSignal } = {}): Promise<WebSocketTransport> {
    return new Promise((resolve, reject) => {
      let ws: WebSocketLike;
      try {
        ws = (options.wsFactory ?? defaultFactory)(url);
      } catch (e) {
        reject(e instanceof ConnectError ? e : new ConnectError(`cannot open ${url}`, { cause: e }));
        return;
      }
      ws.binaryType = "arraybuffer";
      const onAbort = () => {
        ws.close();
        reject(new ConnectError(`connecting to ${url} aborted`, { cause: options.signal?.reason }));
      };
      options.signal?.addEventListener("abort", onAbort, { once: true });
      ws.onopen = () => {
        options.signal?.removeEventListener("abort", onAbort);
        resolve(new WebSocketTransport(ws));
      };
      ws.onerror = (ev: unknown) => {
        options.signal?.removeEventListener("abort", onAbort);
        const msg = (ev as { message?: string })?.message;
        reject(new ConnectError(`cannot connect to ${url}${msg ? `: ${msg}` : ""}`, { cause: ev }));
      };
      ws.onclose = (ev: { code: number; reason: string }) => {
        options.signal?.removeEventListener("abort", onAbort);
        reject(new ConnectError(`cannot connect to ${url}: closed (${ev.code}${ev.reason ? `: ${ev.reason}` : ""})`));
      };
    });
  }

  start(onFrame: (frame: Uint8Array) => void, onClose: (reason: string) => void): void {
    this.onFrame = onFrame;
    this.onClose = onClose;
    for (const f of this.early.splice(0)) onFrame(f);
    if (this.goneReason !== undefined) onClose(this.goneReason);
  }

  private deliver(frame: Uint8Array): void {
    if (this.onFrame) this.onFrame(frame);
    else this.early.push(frame);
  }

  get bufferedAmount(): number {
    return this.ws.bufferedAmount;
  }

  send(frame: Uint8Array): void {
    if (this.closed || this.ws.readyState !== OPEN) return;
    this.ws.send(frame);
  }

  close(): void {
    this.fail("closed", 1000);
  }

  private fail(reason: string, code: number): void {
    if (this.closed) return;
    try {
      this.ws.close(code, reason.slice(0, 120));
    } catch {
      // already closing
    }
    this.gone(reason);
  }

  private gone(reason: string): void {
    if (this.closed) return;
    this.closed = true;
    this.goneReason = reason;
    this.onClose?.(reason);
  }
}
