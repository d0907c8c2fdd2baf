/**
 * @oscloud/client: the oscloud wire protocol (docs/PROTOCOL.md) over a
 * WebSocket link, for browsers and Node ≥ 20.
 */
export { connect, Client, DEFAULT_RESUME_GRACE_MS, LINK_HIGH_WATER, withDeadline } from "./client.js";
export type {
  ClientEvent,
  ConnectOptions,
  Entry,
  Handler,
  MessageInfo,
  PayloadOptions,
  RegistryChange,
  ReconnectOptions,
  SendOptions,
  Served,
  ServeOptions,
  WaitOptions,
} from "./client.js";
export { Pipe } from "./pipe.js";
export { Session, SessionUsageError, PIPE_DATA_OVERHEAD, RETAIN_MAX } from "./session.js";
export type { SessionEvent, SessionOptions, SessionState } from "./session.js";
export { WebSocketTransport } from "./transport.js";
export type { Transport, WebSocketFactory, WebSocketLike } from "./transport.js";
export * from "./codec.js";
export * from "./errors.js";
