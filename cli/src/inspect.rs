//! Looking inside a running node: the command dials it as a node of its
//! own (over any transport), then reads its registry, calls its servers,
//! taps its pipes and polls its control server.

use std::fmt::Write as _;
use std::io::Write as _;
use std::time::{Duration, Instant};

use oscloud_actors::ServerRef;
use oscloud_core::address::Address;
use oscloud_core::trace::{TraceContext, with_trace};
use oscloud_core::transport::MemTransport;
use oscloud_core::{Entry, Kernel, Node, NodeId};

use crate::Error;
use crate::runtime::{EndStatus, NodeStatus, transports};

/// How long to wait for a node to answer.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// A link to a running node.
#[derive(Debug)]
pub struct Session {
    /// Our kernel.
    pub kernel: Kernel,
    node: Node,
    /// The peer's node id.
    pub peer: NodeId,
}

impl Session {
    /// Dial `addr`.
    pub async fn open(addr: &str) -> Result<Self, Error> {
        let addr: Address = addr
            .parse()
            .map_err(|e| Error::Address(format!("{addr:?}: {e}")))?;
        let kernel = Kernel::new();
        let node = Node::new(kernel.clone(), transports(&MemTransport::new()));
        let peer = node.connect(&addr).await?;
        Ok(Self { kernel, node, peer })
    }

    /// The peer's registry entries, once its control server has arrived.
    pub async fn entries(&self) -> Result<Vec<Entry>, Error> {
        let control = self.control().await?;
        let _ = control;
        let mut e: Vec<Entry> = self
            .kernel
            .registry()
            .entries()
            .into_iter()
            .filter(|e| e.node() == self.peer)
            .collect();
        e.sort_by(|a, b| a.name().cmp(b.name()));
        Ok(e)
    }

    /// The name of the peer's control server (waits for it to arrive).
    pub async fn control(&self) -> Result<String, Error> {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let found = self
                .kernel
                .registry()
                .entries()
                .into_iter()
                .find(|e| e.node() == self.peer && e.name().starts_with("oscloud.node."));
            if let Some(e) = found {
                return Ok(e.name().to_owned());
            }
            if Instant::now() >= deadline {
                return Err(Error::Usage(
                    "the node answered but runs no oscloud control server (is it an `oscloud run`?)"
                        .into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The peer's status.
    pub async fn status(&self) -> Result<NodeStatus, Error> {
        let name = self.control().await?;
        Ok(ServerRef::new(&self.kernel, &name)
            .typed::<&str, NodeStatus>()
            .call(&"status", TIMEOUT)
            .await?)
    }

    /// Wait until `name` is registered (on any node we see).
    pub async fn wait_for(&self, name: &str) -> Result<(), Error> {
        let deadline = Instant::now() + TIMEOUT;
        while self.kernel.registry().lookup(name).is_err() {
            if Instant::now() >= deadline {
                return Err(oscloud_core::Error::NotFound(name.to_owned()).into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Drop the link.
    pub fn close(self) {
        self.node.shutdown();
    }

    /// Payload bytes sent on the links so far.
    fn payload_sent(&self) -> u64 {
        self.node
            .links()
            .iter()
            .map(|l| l.stats.payload_bytes_sent)
            .sum()
    }

    /// Drop the link once it took everything queued on it, `sent` payload
    /// bytes in all, and once it wrote it (a link that ends writes what
    /// its session holds first).
    pub async fn finish(self, sent: u64) -> Result<(), Error> {
        let deadline = Instant::now() + TIMEOUT;
        let taken = |n: &Node| {
            let links = n.links();
            links.iter().all(|l| l.send_queue_bytes == 0)
                && links
                    .iter()
                    .map(|l| l.stats.payload_bytes_sent)
                    .sum::<u64>()
                    >= sent
        };
        while !taken(&self.node) {
            if Instant::now() >= deadline {
                return Err(Error::Usage(
                    "the link did not send the message in time".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.node.shutdown();
        while !self.node.links().is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(())
    }
}

/// `oscloud ls`: the node's servers as a table.
pub async fn ls(addr: &str) -> Result<String, Error> {
    let s = Session::open(addr).await?;
    let entries = s.entries().await?;
    let status = s.status().await?;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<28} {:<10} {:<9} {:>8}  CAPABILITIES",
        "NAME", "NODE", "STATUS", "RESTARTS"
    );
    for e in &entries {
        let st = status.servers.iter().find(|x| x.name == e.name());
        let (state, restarts) = match st {
            Some(x) => (if x.running { "running" } else { "stopped" }, x.restarts),
            None => ("running", 0),
        };
        let c = e.capabilities();
        let mut caps = Vec::new();
        if !c.accepts.is_empty() {
            caps.push(format!("accepts={}", c.accepts.join(",")));
        }
        if !c.produces.is_empty() {
            caps.push(format!("produces={}", c.produces.join(",")));
        }
        for f in &c.features {
            caps.push(f.clone());
        }
        for (k, v) in &c.metadata {
            caps.push(format!("{k}={v}"));
        }
        if !c.ports.is_empty() {
            let ports: Vec<String> = c.ports.iter().map(|(n, d)| format!("{n}:{d}")).collect();
            caps.push(format!("ports={}", ports.join(",")));
        }
        if e.is_group_member() {
            caps.push("group".into());
        }
        let caps = if caps.is_empty() {
            "-".into()
        } else {
            caps.join(" ")
        };
        let _ = writeln!(
            out,
            "{:<28} {:<10} {:<9} {:>8}  {caps}",
            e.name(),
            status.node,
            state,
            restarts
        );
    }
    // Servers of the topology that are on this node but not registered
    // now (stopped sinks, failed servers).
    for x in status
        .servers
        .iter()
        .filter(|x| !entries.iter().any(|e| e.name() == x.name))
    {
        let _ = writeln!(
            out,
            "{:<28} {:<10} {:<9} {:>8}  -",
            x.name,
            status.node,
            if x.running { "running" } else { "stopped" },
            x.restarts
        );
    }
    for (heading, routes) in [
        (
            "not announced to neighbours (at the hop limit",
            &status.at_hop_limit,
        ),
        ("not reachable (routes over the hop limit", &status.too_far),
    ] {
        if routes.is_empty() {
            continue;
        }
        let _ = writeln!(out, "\n{heading}, max_hops = {}):", status.max_hops);
        for r in routes {
            let _ = writeln!(out, "  {:<26} {:<10} {} hops", r.name, r.node, r.hops);
        }
    }
    s.close();
    Ok(out)
}

/// The JSON text `json` as a MessagePack message.
fn message(json: &str) -> Result<Vec<u8>, Error> {
    let request: serde_json::Value = serde_json::from_str(json)?;
    rmp_serde::to_vec(&request).map_err(|e| Error::Usage(format!("cannot encode the request: {e}")))
}

/// `oscloud call`: JSON request in, JSON reply out. The call carries
/// `trace` when given (the server handles it in that trace).
pub async fn call(
    addr: &str,
    name: &str,
    json: &str,
    timeout: Duration,
    trace: Option<TraceContext>,
) -> Result<String, Error> {
    let bytes = message(json)?;
    let s = Session::open(addr).await?;
    s.wait_for(name).await?;
    let server = ServerRef::new(&s.kernel, name);
    let reply = with_trace(trace, server.call(bytes.into(), timeout)).await?;
    let value: serde_json::Value = rmp_serde::from_slice(&reply)
        .map_err(|e| Error::Usage(format!("the reply is not MessagePack: {e}")))?;
    s.close();
    Ok(serde_json::to_string(&value)?)
}

/// `oscloud cast`: the JSON request sent as a one-way message, carrying
/// `trace` when given. Returns once the link to the node has written it
/// (not once the server handled it: a cast has no answer).
pub async fn cast(
    addr: &str,
    name: &str,
    json: &str,
    trace: Option<TraceContext>,
) -> Result<(), Error> {
    let bytes = message(json)?;
    let s = Session::open(addr).await?;
    s.wait_for(name).await?;
    let len = bytes.len() as u64;
    let before = s.payload_sent();
    let server = ServerRef::new(&s.kernel, name);
    with_trace(trace, server.cast(bytes.into())).await?;
    s.finish(before + len).await
}

/// `oscloud tap`: print the frames of a pipe as they pass, one per line
/// (text as is, other frames as JSON), until the pipe ends, `limit`
/// frames were printed, or the process is stopped.
pub async fn tap(addr: &str, pipe: &str, limit: Option<u64>, json: bool) -> Result<u64, Error> {
    let first = Session::open(addr).await?;
    let status = first.status().await?;
    let Some(p) = status
        .pipes
        .iter()
        .find(|p| p.name == pipe || p.from.iter().chain(&p.to).any(|e| e == pipe))
    else {
        let names: Vec<String> = status.pipes.iter().flat_map(|p| p.from.clone()).collect();
        return Err(Error::Usage(format!(
            "no pipe {pipe:?} in this topology (pipes: {})",
            names.join(", ")
        )));
    };
    // The pipe is wired on one node: tap it there.
    let session = if p.wired_on == status.node {
        first
    } else {
        let Some(addr) = status
            .nodes
            .iter()
            .find(|n| n.name == p.wired_on)
            .and_then(|n| n.listen.first())
        else {
            return Err(Error::Usage(format!(
                "pipe {pipe:?} is wired on node {:?}, which listens nowhere",
                p.wired_on
            )));
        };
        let addr = addr.clone();
        first.close();
        Session::open(&addr).await?
    };
    let control = session.control().await?;
    let end = ServerRef::new(&session.kernel, &control)
        .open_pipe(pipe)
        .await?;
    let (mut reader, _writer) = end.split();
    let mut n = 0u64;
    let stdout = std::io::stdout();
    while let Some(frame) = reader.recv().await {
        let line = if json {
            oscloud_servers::jsonl::frame_to_json(&frame).to_string()
        } else {
            match oscloud_servers::jsonl::frame_to_json(&frame) {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            }
        };
        let mut out = stdout.lock();
        writeln!(out, "{line}")?;
        out.flush()?;
        n += 1;
        if limit.is_some_and(|l| n >= l) {
            break;
        }
    }
    session.close();
    Ok(n)
}

/// What the pipe ends of one server add up to.
#[derive(Debug, Clone, Copy, Default)]
struct Totals {
    frames_in: u64,
    frames_out: u64,
    bytes_in: u64,
    bytes_out: u64,
    rewires: u64,
    dropped: u64,
}

fn server_totals(ends: &[EndStatus], server: &str) -> Totals {
    let mut t = Totals::default();
    for e in ends.iter().filter(|e| e.server == server) {
        if e.input {
            t.frames_in += e.frames;
            t.bytes_in += e.bytes;
        } else {
            t.frames_out += e.frames;
            t.bytes_out += e.bytes;
        }
        t.rewires += e.rewires;
        t.dropped += e.dropped;
    }
    t
}

fn rate(now: u64, before: Option<u64>, dt: f64) -> String {
    match before {
        Some(b) if dt > 0.0 => format!("{:.0}/s", (now.saturating_sub(b)) as f64 / dt),
        _ => "-".into(),
    }
}

/// A round-trip time for people: `0.42ms`, `12ms`, `-` before it is
/// measured.
fn rtt(us: u64) -> String {
    match us {
        0 => "-".to_owned(),
        us if us < 10_000 => format!("{:.2}ms", us as f64 / 1000.0),
        us => format!("{}ms", us / 1000),
    }
}

/// One screen of `oscloud top`; `prev` is the status a moment ago.
pub fn render(st: &NodeStatus, prev: Option<&NodeStatus>) -> String {
    let dt = prev.map_or(0.0, |p| st.uptime_s - p.uptime_s);
    let mut o = String::new();
    let _ = writeln!(
        o,
        "oscloud top — node {} ({}), pid {}, up {:.0} s",
        st.node,
        &st.node_id.chars().take(8).collect::<String>(),
        st.pid,
        st.uptime_s
    );
    let _ = writeln!(o);
    let _ = writeln!(o, "LINKS");
    let _ = writeln!(
        o,
        "  {:<34} {:<9} {:>10} {:>10} {:>12} {:>12} {:>9} {:>8} {:>6} {:>6} {:>9} {:>5}",
        "REMOTE",
        "PEER",
        "FRAMES OUT",
        "FRAMES IN",
        "BYTES OUT",
        "BYTES IN",
        "RATE IN",
        "RTT",
        "RETX",
        "STALLS",
        "QUEUED",
        "DOWN"
    );
    for l in &st.links {
        let before = prev.and_then(|p| p.links.iter().find(|x| x.remote == l.remote));
        let _ = writeln!(
            o,
            "  {:<34} {:<9} {:>10} {:>10} {:>12} {:>12} {:>9} {:>8} {:>6} {:>6} {:>9} {:>5}",
            l.remote,
            if l.connected {
                l.peer.as_str()
            } else {
                "(down)"
            },
            l.frames_sent,
            l.frames_received,
            l.bytes_sent,
            l.bytes_received,
            rate(l.bytes_received, before.map(|b| b.bytes_received), dt).replace("/s", "B/s"),
            rtt(l.rtt_us),
            l.retransmissions,
            l.credit_stalls,
            l.send_queue_bytes,
            l.reconnects
        );
    }
    let _ = writeln!(o);
    let _ = writeln!(o, "SERVERS (messages: pipe frames through their ports)");
    let _ = writeln!(
        o,
        "  {:<18} {:<8} {:<8} {:>8} {:>8} {:>8} {:>7} {:>7} {:>9} {:>9} {:>7} {:>5} {:>8} {:>7} {:>6} {:>5} {:>8}",
        "NAME",
        "KIND",
        "STATUS",
        "RESTARTS",
        "MSGS IN",
        "MSGS OUT",
        "IN/s",
        "OUT/s",
        "IN B/s",
        "OUT B/s",
        "REWIRED",
        "DROPS",
        "CALLS",
        "CASTS",
        "ERRORS",
        "MBOX",
        "CALL AVG"
    );
    for s in &st.servers {
        let now = server_totals(&st.ends, &s.name);
        let before = prev.map(|p| server_totals(&p.ends, &s.name));
        let _ = writeln!(
            o,
            "  {:<18} {:<8} {:<8} {:>8} {:>8} {:>8} {:>7} {:>7} {:>9} {:>9} {:>7} {:>5} {:>8} {:>7} {:>6} {:>5} {:>8}",
            s.name,
            s.kind,
            if s.running { "running" } else { "stopped" },
            s.restarts,
            now.frames_in,
            now.frames_out,
            rate(now.frames_in, before.map(|b| b.frames_in), dt),
            rate(now.frames_out, before.map(|b| b.frames_out), dt),
            rate(now.bytes_in, before.map(|b| b.bytes_in), dt),
            rate(now.bytes_out, before.map(|b| b.bytes_out), dt),
            now.rewires,
            now.dropped,
            s.calls,
            s.casts,
            s.errors,
            s.mailbox,
            if s.calls == 0 {
                "-".to_owned()
            } else {
                format!("{}us", s.mean_call_us)
            }
        );
    }
    let _ = writeln!(o);
    let _ = writeln!(o, "PIPES (wired on this node)");
    let _ = writeln!(
        o,
        "  {:<24} {:>10} {:>12} {:>9} {:>10} {:>7} {:<6}",
        "PIPE", "FRAMES", "BYTES", "RATE", "TAP DROPS", "STALLS", "STATE"
    );
    for p in st.pipes.iter().filter(|p| p.wired_on == st.node) {
        let before = prev.and_then(|x| x.pipes.iter().find(|y| y.name == p.name));
        let _ = writeln!(
            o,
            "  {:<24} {:>10} {:>12} {:>9} {:>10} {:>7} {:<6}",
            p.name,
            p.frames,
            p.bytes,
            rate(p.frames, before.map(|b| b.frames), dt),
            p.tap_dropped,
            p.credit_stalls,
            if p.finished { "ended" } else { "open" }
        );
    }
    o
}

/// The status of `s`, with the pipe ends wired on every other node of
/// the topology that can be reached (so a server's counters are complete
/// whichever node wires its pipes). `others` keeps the sessions.
async fn status_everywhere(
    s: &Session,
    others: &mut std::collections::HashMap<String, Option<Session>>,
) -> Result<NodeStatus, Error> {
    let mut st = s.status().await?;
    for n in st.nodes.clone() {
        if n.name == st.node {
            continue;
        }
        if !others.contains_key(&n.name) {
            let mut found = None;
            // mem:// addresses live inside the running process.
            for a in n.listen.iter().filter(|a| !a.starts_with("mem://")) {
                if let Ok(Ok(x)) = tokio::time::timeout(TIMEOUT, Session::open(a)).await {
                    found = Some(x);
                    break;
                }
            }
            others.insert(n.name.clone(), found);
        }
        if let Some(Some(other)) = others.get(&n.name) {
            match tokio::time::timeout(TIMEOUT, other.status()).await {
                Ok(Ok(o)) => st.ends.extend(o.ends),
                _ => {
                    if let Some(Some(x)) = others.remove(&n.name) {
                        x.close();
                    }
                }
            }
        }
    }
    Ok(st)
}

/// `oscloud top`: redraw the node's status every `interval` (ANSI clear
/// screen) until stopped, or print it `once`.
pub async fn top(addr: &str, interval: Duration, once: bool) -> Result<(), Error> {
    let s = Session::open(addr).await?;
    let mut others = std::collections::HashMap::new();
    let mut prev: Option<NodeStatus> = None;
    let stdout = std::io::stdout();
    loop {
        let st = status_everywhere(&s, &mut others).await?;
        let screen = render(&st, prev.as_ref());
        {
            let mut out = stdout.lock();
            if !once {
                write!(out, "\x1b[H\x1b[2J")?;
            }
            write!(out, "{screen}")?;
            if !once {
                writeln!(out, "\n(Ctrl-C quits)")?;
            }
            out.flush()?;
        }
        if once {
            break;
        }
        prev = Some(st);
        tokio::time::sleep(interval).await;
    }
    for x in others.into_values().flatten() {
        x.close();
    }
    s.close();
    Ok(())
}
