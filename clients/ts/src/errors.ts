/**
 * One Error subclass per way an operation can fail. Each sets `name` (so it
 * survives structured cloning and logging) and, where there is one, `cause`.
 */
import { ErrorKind } from "./codec.js";

/** Base class of every error this package throws. */
export class OscloudError extends Error {
  override name = "OscloudError";
}

/** The link could not be opened, or the Hello exchange failed. */
export class ConnectError extends OscloudError {
  override name = "ConnectError";
}

/**
 * The session is closed (by us, by the peer, or because the link failed).
 * `code` is the Close code (docs/PROTOCOL.md §5.4) when one was exchanged.
 */
export class SessionClosedError extends OscloudError {
  override name = "SessionClosedError";
  constructor(
    message: string,
    readonly code?: number,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/**
 * The link was lost and the session could not be resumed (the node no
 * longer had it: Close code 12, or it does not resume sessions, or the
 * grace passed), so the client started a new session: what was in flight
 * on the old one (calls waiting for a reply, pipes) failed with this. A
 * call that fails so may or may not have run on the server; casts sent
 * shortly before may or may not have arrived. `code` is the Close code
 * that ended the old session, when there was one.
 */
export class SessionResetError extends SessionClosedError {
  override name = "SessionResetError";
}

/** The operation took longer than its `timeout`. */
export class TimeoutError extends OscloudError {
  override name = "TimeoutError";
}

/** The operation's `signal` was aborted; `cause` is the signal's reason. */
export class AbortedError extends OscloudError {
  override name = "AbortedError";
}

/** The remote side answered a call with ReplyErr (docs/PROTOCOL.md §5.3). */
export class RemoteError extends OscloudError {
  override name = "RemoteError";
  constructor(
    readonly kind: number,
    message: string,
  ) {
    super(`${remoteKindName(kind)}: ${message}`);
  }
}

/** No server of that name is known (locally in the registry, or remotely). */
export class NotFoundError extends OscloudError {
  override name = "NotFoundError";
}

/** A message does not fit the peer's `max_frame`, or a pipe frame its `pipe_window`. */
export class TooLargeError extends OscloudError {
  override name = "TooLargeError";
}

/** A pipe was closed with a reason other than Normal. */
export class PipeClosedError extends OscloudError {
  override name = "PipeClosedError";
  constructor(
    message: string,
    readonly reasonCode: number,
  ) {
    super(message);
  }
}

/** The payload could not be encoded or decoded as MessagePack. */
export class PayloadError extends OscloudError {
  override name = "PayloadError";
}

/** The name of a remote error kind, "other" for kinds this version does not know. */
export function remoteKindName(kind: number): string {
  for (const [name, k] of Object.entries(ErrorKind)) if (k === kind) return name;
  return "other";
}
