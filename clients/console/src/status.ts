/**
 * The status a node's control server (`oscloud.node.NAME`) answers,
 * decoded from MessagePack. The Rust side encodes structs compactly (as
 * arrays, fields in declaration order: `cli/src/runtime.rs`, `NodeStatus`);
 * maps are taken too.
 */

/** One server of a node. */
export interface ServerStatus {
  name: string;
  kind: string;
  running: boolean;
  restarts: number;
}

/** One link of a node, with its counters. */
export interface LinkInfo {
  local: string;
  remote: string;
  /** The peer's short node id (8 hex digits), if known. */
  peer: string;
  connected: boolean;
  reconnects: number;
  framesSent: number;
  framesReceived: number;
  bytesSent: number;
  bytesReceived: number;
  dropped: number;
  /** Round-trip time in microseconds, as the node's probe measures it (0: not yet). */
  rttUs: number;
  /** Data packets sent again (lossy links only). */
  retransmissions: number;
  /** Times a pipe frame waited for the peer's credit on this link. */
  creditStalls: number;
}

/** One pipe of the topology. */
export interface PipeStatus {
  name: string;
  from: string[];
  to: string[];
  wiredOn: string;
  frames: number;
  bytes: number;
  tapDropped: number;
  finished: boolean;
}

/** A node's status. */
export interface NodeStatus {
  node: string;
  nodeId: string;
  pid: number;
  uptimeS: number;
  servers: ServerStatus[];
  links: LinkInfo[];
  pipes: PipeStatus[];
}

/** Field `key` (a map) or `index` (an array) of a decoded struct. */
function field(v: unknown, key: string, index: number): unknown {
  if (Array.isArray(v)) return v[index];
  if (v !== null && typeof v === "object") return (v as Record<string, unknown>)[key];
  return undefined;
}

const str = (v: unknown): string => (typeof v === "string" ? v : "");
const num = (v: unknown): number => (typeof v === "number" ? v : typeof v === "bigint" ? Number(v) : 0);
const bool = (v: unknown): boolean => v === true;
const list = <T>(v: unknown, each: (x: unknown) => T): T[] => (Array.isArray(v) ? v.map(each) : []);

/** Decodes a status reply; missing or mistyped fields become empty values. */
export function decodeStatus(v: unknown): NodeStatus {
  return {
    node: str(field(v, "node", 0)),
    nodeId: str(field(v, "node_id", 1)),
    pid: num(field(v, "pid", 2)),
    uptimeS: num(field(v, "uptime_s", 3)),
    servers: list(field(v, "servers", 4), (s) => ({
      name: str(field(s, "name", 0)),
      kind: str(field(s, "kind", 1)),
      running: bool(field(s, "running", 2)),
      restarts: num(field(s, "restarts", 3)),
    })),
    links: list(field(v, "links", 5), (l) => ({
      local: str(field(l, "local", 0)),
      remote: str(field(l, "remote", 1)),
      peer: str(field(l, "peer", 2)),
      connected: bool(field(l, "connected", 3)),
      reconnects: num(field(l, "reconnects", 4)),
      framesSent: num(field(l, "frames_sent", 5)),
      framesReceived: num(field(l, "frames_received", 6)),
      bytesSent: num(field(l, "bytes_sent", 7)),
      bytesReceived: num(field(l, "bytes_received", 8)),
      dropped: num(field(l, "dropped", 9)),
      rttUs: num(field(l, "rtt_us", 10)),
      retransmissions: num(field(l, "retransmissions", 11)),
      creditStalls: num(field(l, "credit_stalls", 12)),
    })),
    pipes: list(field(v, "pipes", 6), (p) => ({
      name: str(field(p, "name", 0)),
      from: list(field(p, "from", 1), str),
      to: list(field(p, "to", 2), str),
      wiredOn: str(field(p, "wired_on", 3)),
      frames: num(field(p, "frames", 4)),
      bytes: num(field(p, "bytes", 5)),
      tapDropped: num(field(p, "tap_dropped", 6)),
      finished: bool(field(p, "finished", 7)),
    })),
  };
}

/** A byte count for people: 1.2 KiB, 3.4 MiB. */
export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  if (n < 1024 ** 3) return `${(n / 1024 ** 2).toFixed(1)} MiB`;
  return `${(n / 1024 ** 3).toFixed(2)} GiB`;
}

/** A round-trip time for people: 0.42 ms, 12 ms; "–" before it is measured. */
export function formatRtt(us: number): string {
  if (us <= 0) return "–";
  if (us < 10_000) return `${(us / 1000).toFixed(2)} ms`;
  return `${Math.round(us / 1000)} ms`;
}
