/**
 * A pipe as web streams (docs/PROTOCOL.md §4.3, §8): `readable` yields the
 * peer's frames and returns their credit only when the reader pulls them;
 * `writable` sends one frame per chunk and waits while the pipe lacks
 * credit. Closing the writable half-closes the pipe (PipeEnd); `close()`
 * closes both directions (PipeClose).
 */
import type { ExitReason } from "./codec.js";
import { PipeClosedError, SessionClosedError, TooLargeError } from "./errors.js";

/** What a pipe needs from the connection that carries it. */
export interface PipeHost {
  /** Sends a frame if the credit allows; false when it must wait. */
  writeFrame(pipeId: number, frame: Uint8Array): boolean;
  /** The peer's pipe window (a frame above it can never be sent). */
  peerWindow(): number;
  consumed(pipeId: number, bytes: number): void;
  endPipe(pipeId: number): void;
  closePipe(pipeId: number, reason: ExitReason): void;
}

/** One pipe, opened by us (`openPipe`) or by the peer (a served port). */
export class Pipe {
  /** The peer's frames, one chunk per frame. */
  readonly readable: ReadableStream<Uint8Array>;
  /** Our frames, one chunk per frame. */
  readonly writable: WritableStream<Uint8Array>;
  /** Resolves with the reason the pipe closed. */
  readonly closed: Promise<ExitReason>;

  private frames: Uint8Array[] = [];
  private remoteEnded = false;
  private failure: Error | undefined;
  private finished = false;
  private readerGone = false;
  private writerGone = false;
  private wakeReader: (() => void) | undefined;
  private wakeWriter: (() => void) | undefined;
  private resolveClosed!: (r: ExitReason) => void;

  constructor(
    private readonly host: PipeHost,
    /** The pipe id in this side's numbering. */
    readonly id: number,
  ) {
    this.closed = new Promise((r) => (this.resolveClosed = r));
    this.readable = new ReadableStream<Uint8Array>(
      {
        pull: (controller) => this.pull(controller),
        cancel: () => {
          this.readerGone = true;
          for (const f of this.frames.splice(0)) this.host.consumed(this.id, f.length);
          if (this.writerGone) this.close();
        },
      },
      { highWaterMark: 0 },
    );
    this.writable = new WritableStream<Uint8Array>(
      {
        write: (chunk) => this.write(chunk),
        close: () => {
          this.writerGone = true;
          if (!this.finished) this.host.endPipe(this.id);
        },
        abort: (reason) => {
          this.writerGone = true;
          this.close({ code: 1, text: `writer aborted: ${String(reason)}` });
        },
      },
      { highWaterMark: 1 },
    );
  }

  /** Closes the pipe in both directions (Normal unless a reason is given). */
  close(reason: ExitReason = { code: 0, text: "" }): void {
    if (this.finished) return;
    this.host.closePipe(this.id, reason);
    this.onClose(reason);
  }

  // ---- called by the connection ----

  /** A frame arrived. */
  onFrame(frame: Uint8Array): void {
    if (this.readerGone) {
      this.host.consumed(this.id, frame.length);
      return;
    }
    this.frames.push(frame);
    this.wake();
  }

  /** The peer sent PipeEnd. */
  onEnd(): void {
    this.remoteEnded = true;
    this.wake();
  }

  /** The pipe has more credit. */
  onCredit(): void {
    const w = this.wakeWriter;
    this.wakeWriter = undefined;
    w?.();
  }

  /** The pipe closed (PipeClose either way, or the session ended). */
  onClose(reason: ExitReason, error?: Error): void {
    if (this.finished) return;
    this.finished = true;
    this.remoteEnded = true;
    if (error) this.failure = error;
    else if (reason.code !== 0) this.failure = new PipeClosedError(`pipe ${this.id} closed: ${reason.text || "failed"}`, reason.code);
    this.resolveClosed(reason);
    this.wake();
    this.onCredit();
  }

  private wake(): void {
    const w = this.wakeReader;
    this.wakeReader = undefined;
    w?.();
  }

  private async pull(controller: ReadableStreamDefaultController<Uint8Array>): Promise<void> {
    for (;;) {
      const f = this.frames.shift();
      if (f) {
        controller.enqueue(f);
        if (!this.finished) this.host.consumed(this.id, f.length);
        return;
      }
      if (this.failure) {
        controller.error(this.failure);
        return;
      }
      if (this.remoteEnded) {
        controller.close();
        this.readerGone = true;
        if (this.writerGone && !this.finished) this.close();
        return;
      }
      await new Promise<void>((r) => (this.wakeReader = r));
    }
  }

  private async write(chunk: Uint8Array): Promise<void> {
    if (!(chunk instanceof Uint8Array)) throw new TypeError("pipe chunks must be Uint8Array");
    if (chunk.length > this.host.peerWindow()) {
      throw new TooLargeError(`frame of ${chunk.length} bytes above the peer's pipe window ${this.host.peerWindow()}`);
    }
    for (;;) {
      if (this.finished) throw this.failure ?? new SessionClosedError(`pipe ${this.id} is closed`);
      if (this.host.writeFrame(this.id, chunk)) return;
      await new Promise<void>((r) => (this.wakeWriter = r));
    }
  }
}
