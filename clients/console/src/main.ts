/**
 * The oscloud web console: joins one node of a run over the WebSocket
 * transport (the console server relays `/oscloud` to it) and shows the
 * topology with live link stats, the registry, a call/cast form, taps of
 * pipes and a terminal on `pty` servers. Everything goes over the wire
 * protocol with @oscloud/client.
 */
import { Decoder } from "@msgpack/msgpack";
import { connect, type Client, type Entry, type Pipe } from "@oscloud/client";
import { Terminal } from "@xterm/xterm";
import "@xterm/xterm/css/xterm.css";
import "./console.css";
import { decodeStatus, formatBytes, formatRtt, type NodeStatus } from "./status.js";

/** What the console server says about the run (`/config.json`). */
interface Config {
  node: string;
  nodes: string[];
  ws: string;
  /** The console may only look (`--console-read-only`). */
  readOnly?: boolean;
  /** Its node id then (32 hex digits), read-only in the console node's access policy. */
  identity?: string | null;
}

const CONTROL = "oscloud.node.";
/** The control server's port that streams its status every second (cli/src/runtime.rs, STATUS_PORT). */
const STATUS_PORT = ".status";
const RENDER_MS = 1000;
const SVG = "http://www.w3.org/2000/svg";

const $ = <T extends HTMLElement>(id: string): T => {
  const e = document.getElementById(id);
  if (!e) throw new Error(`no #${id}`);
  return e as T;
};

function el<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Record<string, string> = {}, text?: string): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function svg(tag: string, attrs: Record<string, string | number>, text?: string): SVGElement {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = text;
  return e;
}

function setStatus(text: string, ok: boolean): void {
  const s = $("status");
  s.textContent = text;
  s.className = ok ? "ok" : "bad";
}

/** The console's state: the registry, the latest status of each node. */
class State {
  entries = new Map<string, Entry>();
  status = new Map<string, NodeStatus>();
  /** When each node's latest status arrived. */
  at = new Map<string, number>();
  previous = new Map<string, { at: number; status: NodeStatus }>();
  /** The status stream of each node, while open. */
  streams = new Map<string, Pipe>();
  events: string[] = [];

  constructor(readonly config: Config) {}

  /** Nodes whose control server is registered now, in topology order. */
  liveNodes(): string[] {
    const live = new Set([...this.entries.keys()].filter((n) => n.startsWith(CONTROL)).map((n) => n.slice(CONTROL.length)));
    const ordered = this.config.nodes.filter((n) => live.has(n));
    for (const n of live) if (!ordered.includes(n)) ordered.push(n);
    return ordered;
  }
}

/** The topology: nodes in a row (their servers below), links as arcs above. */
function renderGraph(state: State): void {
  const nodes = state.liveNodes();
  const w = 1200;
  const top = 60 + 45 * Math.max(0, nodes.length - 1);
  const most = Math.max(0, ...nodes.map((n) => state.status.get(n)?.servers.length ?? 0));
  const h = top + 110 + 34 * most;
  const root = svg("svg", { viewBox: `0 0 ${w} ${h}`, width: "100%", role: "img", "aria-label": "topology" });
  const pos = new Map(nodes.map((n, i) => [n, [((i + 0.5) * w) / Math.max(1, nodes.length), top] as const]));
  const rows: HTMLTableRowElement[] = [];
  // Links: drawn once per pair, from the side that reports them.
  const drawn = new Set<string>();
  for (const n of nodes) {
    const st = state.status.get(n);
    if (!st) continue;
    for (const l of st.links) {
      const peer = nodes.find((m) => m !== n && l.peer !== "" && (state.status.get(m)?.nodeId ?? "").startsWith(l.peer));
      const prev = state.previous.get(n);
      const before = prev?.status.links.find((p) => p.remote === l.remote && p.local === l.local);
      const dt2 = prev ? ((state.at.get(n) ?? 0) - prev.at) / 1000 : 0;
      const rate = before && dt2 > 0 ? Math.max(0, Math.round((l.bytesSent + l.bytesReceived - before.bytesSent - before.bytesReceived) / dt2)) : 0;
      const tr = el("tr", { "data-link": `${n}|${peer ?? l.remote}` });
      tr.append(
        el("td", {}, n),
        el("td", {}, peer ?? `${l.remote} (a client, e.g. this console)`),
        el("td", { class: l.connected ? "up" : "down" }, l.connected ? "up" : "down"),
        el("td", {}, formatBytes(l.bytesSent)),
        el("td", {}, formatBytes(l.bytesReceived)),
        el("td", {}, `${l.framesSent} / ${l.framesReceived}`),
        el("td", {}, `${formatBytes(rate)}/s`),
        el("td", { class: "rtt" }, formatRtt(l.rttUs)),
        el("td", { class: "retransmits" }, String(l.retransmissions)),
        el("td", { class: "stalls" }, String(l.creditStalls)),
        el("td", {}, String(l.reconnects)),
        el("td", {}, String(l.dropped)),
      );
      rows.push(tr);
      if (!peer) continue;
      const key = [n, peer].sort().join("|");
      if (drawn.has(key)) continue;
      drawn.add(key);
      const [x1, y1] = pos.get(n) ?? [0, 0];
      const [x2, y2] = pos.get(peer) ?? [0, 0];
      const span = Math.abs(nodes.indexOf(n) - nodes.indexOf(peer));
      // The curve's control point; its middle is halfway to it.
      const control = y1 - 26 - 90 * span;
      const middle = (y1 - 26 + control) / 2;
      root.append(svg("path", { d: `M ${x1} ${y1 - 26} Q ${(x1 + x2) / 2} ${control} ${x2} ${y2 - 26}`, class: l.connected ? "link up" : "link down", "data-link": key }));
      root.append(
        svg("text", { x: (x1 + x2) / 2, y: middle - 6, class: "link-label", "text-anchor": "middle" }, `${formatBytes(rate)}/s · rtt ${formatRtt(l.rttUs)} · ${l.framesSent + l.framesReceived} frames`),
      );
    }
  }
  for (const n of nodes) {
    const [x, y] = pos.get(n) ?? [0, 0];
    const g = svg("g", { class: n === state.config.node ? "node joined" : "node", "data-node": n });
    g.append(svg("circle", { cx: x, cy: y, r: 26 }));
    g.append(svg("text", { x, y: y + 5, "text-anchor": "middle", class: "node-name" }, n));
    const st = state.status.get(n);
    if (st) {
      g.append(svg("text", { x, y: y + 44, "text-anchor": "middle", class: "node-info" }, `pid ${st.pid} · up ${Math.round(st.uptimeS)} s`));
      st.servers.forEach((s, i) => {
        const sy = y + 72 + i * 34;
        const sg = svg("g", { class: s.running ? "server running" : "server stopped", "data-server": s.name });
        sg.append(svg("rect", { x: x - 90, y: sy - 14, width: 180, height: 26, rx: 5 }));
        sg.append(svg("text", { x, y: sy + 4, "text-anchor": "middle" }, `${s.name} (${s.kind})${s.restarts ? ` ↻${s.restarts}` : ""}`));
        g.append(sg);
      });
    }
    root.append(g);
  }
  $("graph").replaceChildren(root);
  $("link-rows").replaceChildren(...rows);
  const gone = state.config.nodes.filter((n) => !nodes.includes(n));
  $("graph-note").textContent = gone.length ? `not reachable now: ${gone.join(", ")}` : "";
}

function renderRegistry(state: State): void {
  const body = $("registry-rows");
  const rows = [...state.entries.values()].sort((a, b) => a.name.localeCompare(b.name));
  body.replaceChildren(
    ...rows.map((e) => {
      const tr = el("tr", { "data-name": e.name });
      const caps = [...e.capabilities.features, ...e.capabilities.accepts.map((a) => `in:${a}`), ...e.capabilities.produces.map((p) => `out:${p}`)].join(" ");
      tr.append(el("td", {}, e.name), el("td", {}, e.node.slice(0, 8)), el("td", {}, caps), el("td", {}, e.ports.map((p) => p.name).join(" ")));
      return tr;
    }),
  );
  const names = $("call-names");
  names.replaceChildren(...rows.map((e) => el("option", { value: e.name })));
}

function logEvent(state: State, text: string): void {
  state.events.unshift(`${new Date().toLocaleTimeString()} ${text}`);
  state.events.length = Math.min(state.events.length, 50);
  $("registry-events").textContent = state.events.join("\n");
}

function renderPickers(state: State): void {
  const ptys: string[] = [];
  const pipes = new Map<string, string>();
  for (const st of state.status.values()) {
    for (const s of st.servers) if (s.kind === "pty") ptys.push(s.name);
    for (const p of st.pipes) pipes.set(p.name, p.wiredOn);
  }
  syncOptions($("term-server") as HTMLSelectElement, ptys.sort());
  syncOptions($("tap-pipe") as HTMLSelectElement, [...pipes.keys()].sort());
  (window as unknown as { oscloudPipes: Map<string, string> }).oscloudPipes = pipes;
}

function syncOptions(select: HTMLSelectElement, values: string[]): void {
  const now = [...select.options].map((o) => o.value);
  if (now.join("\n") === values.join("\n")) return;
  const keep = select.value;
  select.replaceChildren(...values.map((v) => el("option", { value: v }, v)));
  if (values.includes(keep)) select.value = keep;
}

/**
 * Reads a node's status stream (its control server's `.status` port: a
 * status every second) until it ends. A pipe read only: a read-only
 * console gets live status without calling.
 */
async function streamStatus(client: Client, state: State, node: string): Promise<void> {
  const pipe = client.openPipe(CONTROL + node, STATUS_PORT);
  state.streams.set(node, pipe);
  const decoder = new Decoder({ useBigInt64: true });
  try {
    const reader = pipe.readable.getReader();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      const old = state.status.get(node);
      const oldAt = state.at.get(node);
      if (old && oldAt !== undefined) state.previous.set(node, { at: oldAt, status: old });
      state.status.set(node, decodeStatus(decoder.decode(value)));
      state.at.set(node, Date.now());
    }
  } catch {
    // The node left (or the pipe failed): it is opened again once the node is back.
  } finally {
    if (state.streams.get(node) === pipe) state.streams.delete(node);
    state.status.delete(node);
  }
}

/** Keeps a status stream open to every live node and redraws every second. */
async function live(client: Client, state: State): Promise<void> {
  for (;;) {
    const nodes = state.liveNodes();
    for (const n of nodes) if (!state.streams.has(n)) void streamStatus(client, state, n);
    for (const [n, pipe] of [...state.streams]) {
      if (!nodes.includes(n)) {
        pipe.close();
        state.streams.delete(n);
        state.status.delete(n);
      }
    }
    renderGraph(state);
    renderPickers(state);
    await new Promise((r) => setTimeout(r, RENDER_MS));
  }
}

async function watchRegistry(client: Client, state: State): Promise<void> {
  for await (const change of client.watch()) {
    if (change.type === "up") state.entries.set(change.entry.name, change.entry);
    else state.entries.delete(change.entry.name);
    logEvent(state, `${change.type === "up" ? "+" : "−"} ${change.entry.name}`);
    renderRegistry(state);
    renderGraph(state);
  }
}

function setupCall(client: Client, readOnly: boolean): void {
  const out = $("call-result");
  if (readOnly) {
    for (const id of ["call-name", "call-request", "call-button", "cast-button"]) ($(id) as HTMLInputElement).disabled = true;
    out.textContent = "read-only console: calls and casts are refused by the node";
    out.className = "";
  }
  const send = async (cast: boolean): Promise<void> => {
    const name = ($("call-name") as HTMLInputElement).value.trim();
    let request: unknown;
    try {
      request = JSON.parse(($("call-request") as HTMLTextAreaElement).value);
    } catch (e) {
      out.textContent = `bad JSON: ${(e as Error).message}`;
      out.className = "bad";
      return;
    }
    try {
      if (cast) {
        client.cast(name, request);
        out.textContent = "cast sent";
      } else {
        const reply = await client.call(name, request, { timeout: 5000 });
        out.textContent = JSON.stringify(reply, (_k, v: unknown) => (typeof v === "bigint" ? v.toString() : v instanceof Uint8Array ? [...v] : v), 2);
      }
      out.className = "ok";
    } catch (e) {
      out.textContent = `${(e as Error).name}: ${(e as Error).message}`;
      out.className = "bad";
    }
  };
  $("call-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    void send(false);
  });
  $("cast-button").addEventListener("click", () => void send(true));
}

function setupTap(client: Client): void {
  const out = $("tap-out");
  let current: Pipe | undefined;
  const decoder = new TextDecoder();
  $("tap-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    void (async () => {
      current?.close();
      const pipe = ($("tap-pipe") as HTMLSelectElement).value;
      const pipes = (window as unknown as { oscloudPipes?: Map<string, string> }).oscloudPipes;
      const node = pipes?.get(pipe);
      if (!pipe || !node) return;
      out.textContent = "";
      const p = client.openPipe(CONTROL + node, pipe);
      current = p;
      $("tap-state").textContent = `tapping ${pipe} on ${node}`;
      try {
        const reader = p.readable.getReader();
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          const line = el("div", {}, decoder.decode(value).replace(/\n$/, ""));
          out.append(line);
          while (out.childElementCount > 500) out.firstElementChild?.remove();
          out.scrollTop = out.scrollHeight;
        }
        $("tap-state").textContent = `${pipe} ended`;
      } catch (e) {
        if (current === p) $("tap-state").textContent = `tap: ${(e as Error).message}`;
      }
    })();
  });
}

function setupTerminal(client: Client, readOnly: boolean): void {
  const term = new Terminal({ rows: 24, cols: 80, convertEol: false, cursorBlink: true, fontSize: 13 });
  term.open($("terminal"));
  const encoder = new TextEncoder();
  // One keyboard pipe per server, kept while the page lives: its end
  // would type Ctrl-D into the terminal (a shell at its prompt exits).
  const keyboards = new Map<string, WritableStreamDefaultWriter<Uint8Array>>();
  let screen: Pipe | undefined;
  let writer: WritableStreamDefaultWriter<Uint8Array> | undefined;
  let queue = Promise.resolve();
  term.onData((data) => {
    const w = writer;
    if (!w) return;
    queue = queue.then(() => w.write(encoder.encode(data))).catch(() => undefined);
  });
  $("term-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const server = ($("term-server") as HTMLSelectElement).value;
    if (!server) return;
    // The server's screen goes to its latest opener: let go of ours first.
    screen?.close();
    term.reset();
    const pipeOut = client.openPipe(server, "out");
    screen = pipeOut;
    // A read-only console watches the screen; it may not type.
    writer = keyboards.get(server);
    if (!writer && !readOnly) {
      writer = client.openPipe(server, "in").writable.getWriter();
      keyboards.set(server, writer);
    }
    $("term-state").textContent = readOnly ? `watching ${server} (read-only)` : `attached to ${server}`;
    term.focus();
    void (async () => {
      try {
        const reader = pipeOut.readable.getReader();
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          term.write(value);
        }
        if (screen === pipeOut) $("term-state").textContent = `${server}: screen ended`;
      } catch (e) {
        if (screen === pipeOut) $("term-state").textContent = `${server}: ${(e as Error).message}`;
      }
    })();
  });
}

async function main(): Promise<void> {
  const config = (await (await fetch("/config.json")).json()) as Config;
  $("joined").textContent = config.node;
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const url = `${scheme}//${location.host}${config.ws}`;
  setStatus(`connecting to ${config.node}…`, true);
  const readOnly = config.readOnly === true;
  const nodeId = config.identity ? Uint8Array.from(config.identity.match(/../g) ?? [], (h) => parseInt(h, 16)) : undefined;
  const client = await connect(url, { timeout: 10_000, nodeId });
  setStatus(`connected to node ${config.node}`, true);
  if (readOnly) {
    $("mode").textContent = "read-only";
    $("mode").title = "this console's identity is read-only in the node's access policy: it may look, not call or type";
    document.body.dataset.readOnly = "true";
  }
  document.body.dataset.connected = "true";
  // The client links again by itself; the status follows it.
  const linked = (how: string) => {
    setStatus(`connected to node ${config.node}${how}`, true);
    document.body.dataset.connected = "true";
  };
  client.on("disconnected", (e) => {
    setStatus(`disconnected (${e.reason}): linking again…`, false);
    document.body.dataset.connected = "false";
  });
  client.on("resumed", () => linked(" (link resumed)"));
  client.on("reset", () => linked(" (new session: open taps and terminals ended)"));
  void client.closed.then((e) => {
    setStatus(`disconnected: ${e.message}`, false);
    document.body.dataset.connected = "false";
  });
  const state = new State(config);
  setupCall(client, readOnly);
  setupTap(client);
  setupTerminal(client, readOnly);
  void watchRegistry(client, state);
  void live(client, state);
}

main().catch((e: unknown) => setStatus(`console: ${(e as Error).message}`, false));
