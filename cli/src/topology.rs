//! Topology files: parsing and validation.
//!
//! A topology file (TOML, or YAML with the same schema) says which nodes there are and how they link,
//! which servers run on which node, and the pipes between server ports.
//! [`Topology::parse`] checks everything before anything starts and
//! reports every problem with its line and column.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use oscloud_actors::{Restart, Strategy};
use oscloud_core::NodeConfig;
use oscloud_core::address::Address;
use serde::Deserialize;
use toml::Spanned;

use crate::kinds::{self, Kind};

/// Address schemes the `oscloud` command can link over.
pub const SCHEMES: &[&str] = &["tcp", "ws", "wss", "unix", "serial", "zenoh", "mem"];

/// The parameter of a `serial://` address that names the node at the
/// other end of the cable (`serial:///dev/ttyUSB0?baud=115200&peer=edge`).
/// It is the command's, not the transport's: it is taken off the address
/// before the port is opened.
pub const SERIAL_PEER: &str = "peer";

/// Whether dialling `connect` reaches a node listening on `listen`: the
/// same address, or (TCP, WebSocket) the same scheme, port and path when
/// the listener binds every interface (`0.0.0.0`, `[::]`); for WebSocket
/// also the same host with other parameters (a `wss://` listener's
/// `cert`/`key`, its dialler's `ca`).
pub fn reaches(connect: &Address, listen: &Address) -> bool {
    if connect == listen || connect.to_string() == listen.to_string() {
        return true;
    }
    let path = |a: &Address| a.path().trim_end_matches('/').to_owned();
    let host_matches = matches!(listen.host(), "0.0.0.0" | "::" | "[::]")
        || (listen.scheme() != "tcp" && connect.host() == listen.host());
    matches!(listen.scheme(), "tcp" | "ws" | "wss")
        && connect.scheme() == listen.scheme()
        && host_matches
        && connect.port().is_some()
        && connect.port() == listen.port()
        && path(connect) == path(listen)
}

/// Names that topology servers cannot take: the runtime's own servers.
pub const RESERVED_PREFIX: &str = "oscloud.";

/// One problem in a topology file, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

/// Every problem found in a topology file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problems {
    /// The file, as given.
    pub file: String,
    /// The problems, in file order.
    pub problems: Vec<Problem>,
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}:{}:{}: {}", self.file, p.line, p.column, p.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

// ------------------------------------------------------------------ raw

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTopology {
    #[serde(default)]
    nodes: BTreeMap<Spanned<String>, Spanned<RawNode>>,
    #[serde(default)]
    servers: BTreeMap<Spanned<String>, Spanned<RawServer>>,
    #[serde(default)]
    pipes: Vec<Spanned<RawPipe>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    #[serde(default)]
    listen: Vec<Spanned<String>>,
    #[serde(default)]
    connect: Vec<Spanned<String>>,
    strategy: Option<Spanned<String>>,
    max_restarts: Option<u32>,
    period_ms: Option<u64>,
    #[serde(default)]
    config: BTreeMap<Spanned<String>, Spanned<toml::Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    kind: Spanned<String>,
    node: Option<Spanned<String>>,
    #[serde(default)]
    args: BTreeMap<Spanned<String>, Spanned<toml::Value>>,
    restart: Option<Spanned<String>>,
    group: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPipe {
    name: Option<Spanned<String>>,
    from: Spanned<toml::Value>,
    to: Spanned<toml::Value>,
    zenoh_tap: Option<Spanned<String>>,
}

// ------------------------------------------------------------------ model

/// A node: a kernel with its links.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeDef {
    /// Its name in the file.
    pub name: String,
    /// Addresses it listens on.
    pub listen: Vec<Address>,
    /// Addresses it dials.
    pub connect: Vec<Address>,
    /// Serial addresses (of `listen` or `connect`, without `peer`) that
    /// name the node at the other end of their cable.
    pub serial_peers: Vec<(Address, String)>,
    /// Its supervisor's strategy.
    pub strategy: Strategy,
    /// Its supervisor's restart intensity: at most this many restarts...
    pub max_restarts: u32,
    /// ...within this period.
    pub period: Duration,
    /// Its link settings (the `[nodes.NAME.config]` table), checked.
    pub config: NodeConfig,
}

/// A server's arguments, already checked against its kind.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Args(pub BTreeMap<String, toml::Value>);

impl Args {
    /// A string argument.
    pub fn str(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(toml::Value::as_str)
    }
    /// A boolean argument.
    pub fn bool(&self, key: &str) -> Option<bool> {
        self.0.get(key).and_then(toml::Value::as_bool)
    }
    /// An integer argument.
    pub fn int(&self, key: &str) -> Option<u64> {
        self.0
            .get(key)
            .and_then(toml::Value::as_integer)
            .and_then(|i| u64::try_from(i).ok())
    }
    /// A list of strings (empty when absent).
    pub fn list(&self, key: &str) -> Vec<String> {
        self.0
            .get(key)
            .and_then(toml::Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// A server: its kind, arguments, node and supervision.
#[derive(Debug, Clone)]
pub struct ServerDef {
    /// Its name (the registry name unless it is in a group).
    pub name: String,
    /// The node it runs on.
    pub node: String,
    /// Its kind.
    pub kind: &'static Kind,
    /// Its arguments.
    pub args: Args,
    /// When its supervisor restarts it (default transient).
    pub restart: Restart,
    /// The group it joins (registered under the group's name) if any.
    pub group: Option<String>,
}

/// One end of a pipe: a server's port.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct End {
    /// The server.
    pub server: String,
    /// The port.
    pub port: String,
}

impl fmt::Display for End {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.server, self.port)
    }
}

/// A pipe: one or more sources (merged) into one or more destinations
/// (split).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipeDef {
    /// Its name: given, or the first source's `server.port`.
    pub name: String,
    /// Sources; several are merged.
    pub from: Vec<End>,
    /// Destinations; several get every frame (split).
    pub to: Vec<End>,
    /// Where the node that wires it publishes its frames on zenoh
    /// (`zenoh_tap = "zenoh://ROUTER:PORT/<cloud>/<node>"`: key
    /// `oscloud/<cloud>/pipe/<node>/<pipe name>`, see
    /// `oscloud_transport_zenoh::tap_key`), if anywhere.
    pub zenoh_tap: Option<Address>,
    /// The line it starts on.
    pub line: usize,
}

/// A checked topology.
#[derive(Debug, Clone)]
pub struct Topology {
    /// The file it came from.
    pub path: PathBuf,
    /// Nodes, in file order.
    pub nodes: Vec<NodeDef>,
    /// Servers, in file order (the order they start in on their node).
    pub servers: Vec<ServerDef>,
    /// Pipes, in file order.
    pub pipes: Vec<PipeDef>,
}

/// Turns byte offsets into lines and columns (of the YAML file the text
/// was made from, if it was).
struct Lines<'a> {
    text: &'a str,
    yaml: Option<&'a crate::yaml::Translated>,
}

impl Lines<'_> {
    fn at(&self, offset: usize) -> (usize, usize) {
        if let Some(y) = self.yaml {
            return y.position(offset);
        }
        let offset = offset.min(self.text.len());
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let col = before.rfind('\n').map_or(offset, |i| offset - i - 1) + 1;
        (line, col)
    }
}

struct Check<'a> {
    lines: Lines<'a>,
    problems: Vec<(usize, Problem)>,
}

impl Check<'_> {
    fn err(&mut self, span: Range<usize>, message: impl Into<String>) {
        let (line, column) = self.lines.at(span.start);
        self.problems.push((
            span.start,
            Problem {
                line,
                column,
                message: message.into(),
            },
        ));
    }
}

fn parse_end(s: &str) -> Option<End> {
    let (server, port) = s.rsplit_once('.')?;
    (!server.is_empty() && !port.is_empty()).then(|| End {
        server: server.to_owned(),
        port: port.to_owned(),
    })
}

fn ends(check: &mut Check<'_>, v: &Spanned<toml::Value>, what: &str) -> Vec<End> {
    let span = v.span();
    let items: Vec<&toml::Value> = match v.get_ref() {
        toml::Value::Array(a) => a.iter().collect(),
        other => vec![other],
    };
    if items.is_empty() {
        check.err(span, format!("`{what}` names no port"));
        return Vec::new();
    }
    let mut out = Vec::new();
    for item in items {
        match item.as_str().map(|s| (s, parse_end(s))) {
            Some((_, Some(end))) => out.push(end),
            Some((s, None)) => check.err(
                span.clone(),
                format!("{s:?} is not SERVER.PORT (e.g. \"sensor.out\")"),
            ),
            None => check.err(
                span.clone(),
                format!("`{what}` must be \"SERVER.PORT\" or an array of them"),
            ),
        }
    }
    out
}

fn check_name(check: &mut Check<'_>, name: &Spanned<String>, what: &str) -> bool {
    let n = name.get_ref();
    let bad = if n.is_empty() {
        Some("cannot be empty")
    } else if n.len() > 255 {
        Some("is longer than 255 bytes")
    } else if n.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Some("cannot contain white space")
    } else if n.contains('.') {
        Some("cannot contain '.' (pipe ends are written SERVER.PORT)")
    } else {
        None
    };
    if let Some(why) = bad {
        check.err(name.span(), format!("{what} name {n:?} {why}"));
        return false;
    }
    true
}

/// A checked address (for `wss://`, with the TLS files it names, read as
/// `listening` on it or dialling it would); for `serial://`, also the
/// `peer` it names (taken off the address).
fn address(
    check: &mut Check<'_>,
    s: &Spanned<String>,
    listening: bool,
) -> Option<(Address, Option<String>)> {
    match s.get_ref().parse::<Address>() {
        Ok(a) if a.scheme() == oscloud_transport_serial::SCHEME => {
            let peer = a.param(SERIAL_PEER).map(str::to_owned);
            let a = a.without_param(SERIAL_PEER);
            match oscloud_transport_serial::SerialSettings::from_address(&a) {
                Ok(_) => Some((a, peer)),
                Err(e) => {
                    check.err(s.span(), format!("bad address {:?}: {e}", s.get_ref()));
                    None
                }
            }
        }
        Ok(a) if SCHEMES.contains(&a.scheme()) => {
            match oscloud_transport_ws::check_tls(&a, listening) {
                Ok(()) => Some((a, None)),
                Err(e) => {
                    check.err(s.span(), format!("bad address {:?}: {e}", s.get_ref()));
                    None
                }
            }
        }
        Ok(a) => {
            check.err(
                s.span(),
                format!(
                    "bad address {:?}: no transport for scheme {:?} (this build has {})",
                    s.get_ref(),
                    a.scheme(),
                    SCHEMES.join(", ")
                ),
            );
            None
        }
        Err(e) => {
            check.err(s.span(), format!("bad address {:?}: {e}", s.get_ref()));
            None
        }
    }
}

impl Topology {
    /// Read and check the topology file at `path`.
    pub fn load(path: &Path) -> Result<Self, Problems> {
        let text = std::fs::read_to_string(path).map_err(|e| Problems {
            file: path.display().to_string(),
            problems: vec![Problem {
                line: 0,
                column: 0,
                message: format!("cannot read the file: {e}"),
            }],
        })?;
        Self::parse(&text, path)
    }

    /// Check the topology `text` (read from `path`, which is used in
    /// messages and to resolve relative paths in arguments).
    ///
    /// A path ending in `.yaml` or `.yml` is read as YAML (the same schema;
    /// see [`crate::yaml`]); anything else as TOML.
    pub fn parse(text: &str, path: &Path) -> Result<Self, Problems> {
        let file = path.display().to_string();
        let is_yaml = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.eq_ignore_ascii_case("yaml") || e.eq_ignore_ascii_case("yml"));
        if !is_yaml {
            return Self::parse_toml(text, path, None);
        }
        match crate::yaml::to_toml(text) {
            Ok(t) => Self::parse_toml(&t.toml, path, Some(&t)),
            Err(p) => Err(Problems {
                file,
                problems: vec![p],
            }),
        }
    }

    fn parse_toml(
        text: &str,
        path: &Path,
        yaml: Option<&crate::yaml::Translated>,
    ) -> Result<Self, Problems> {
        let mut check = Check {
            lines: Lines { text, yaml },
            problems: Vec::new(),
        };
        let file = path.display().to_string();
        let raw: RawTopology = match toml::from_str(text) {
            Ok(r) => r,
            Err(e) => {
                let span = e.span().unwrap_or(0..0);
                let mut message = e.message().trim().to_owned();
                if message == "duplicate key"
                    && let Some(key) = text.get(span.clone())
                {
                    message = format!("duplicate key {key} (each name is defined once)");
                }
                check.err(span, message);
                return Err(check.into_problems(file));
            }
        };
        let topo = Self::build(&mut check, raw, path);
        if check.problems.is_empty() {
            Ok(topo)
        } else {
            Err(check.into_problems(file))
        }
    }

    fn build(check: &mut Check<'_>, raw: RawTopology, path: &Path) -> Topology {
        // Nodes, in file order.
        let mut raw_nodes: Vec<_> = raw.nodes.into_iter().collect();
        raw_nodes.sort_by_key(|(k, _)| k.span().start);
        let mut nodes = Vec::new();
        for (name, node) in &raw_nodes {
            check_name(check, name, "node");
            let n = node.get_ref();
            let strategy = match n
                .strategy
                .as_ref()
                .map(|s| (s.get_ref().as_str(), s.span()))
            {
                None | Some(("one_for_one", _)) => Strategy::OneForOne,
                Some(("one_for_all", _)) => Strategy::OneForAll,
                Some(("rest_for_one", _)) => Strategy::RestForOne,
                Some((other, span)) => {
                    check.err(
                        span,
                        format!(
                            "unknown strategy {other:?} (expected one_for_one, one_for_all or rest_for_one)"
                        ),
                    );
                    Strategy::OneForOne
                }
            };
            let mut serial_peers = Vec::new();
            let mut addresses = |list: &[Spanned<String>], listening: bool| {
                let mut out = Vec::new();
                for a in list {
                    if let Some((a, peer)) = address(check, a, listening) {
                        if let Some(peer) = peer {
                            serial_peers.push((a.clone(), peer));
                        }
                        out.push(a);
                    }
                }
                out
            };
            let listen = addresses(&n.listen, true);
            let connect = addresses(&n.connect, false);
            let mut config = NodeConfig::default();
            let problems_before = check.problems.len();
            for (key, value) in &n.config {
                // Numbers stand for themselves (seconds for a duration).
                let text = match value.get_ref() {
                    toml::Value::String(s) => s.clone(),
                    toml::Value::Integer(i) => i.to_string(),
                    toml::Value::Float(f) => f.to_string(),
                    other => {
                        check.err(
                            value.span(),
                            format!(
                                "setting {:?} wants a number or a string like \"250ms\", not a {}",
                                key.get_ref(),
                                other.type_str()
                            ),
                        );
                        continue;
                    }
                };
                if let Err(e) = config.set(key.get_ref(), &text) {
                    check.err(value.span(), e.to_string());
                }
            }
            // Settings valid alone may not be together (a keepalive not
            // shorter than the idle timeout): point at the timers if set.
            if let (true, Err(e)) = (check.problems.len() == problems_before, config.validate()) {
                let span = n
                    .config
                    .iter()
                    .find(|(k, _)| ["keepalive", "idle_timeout"].contains(&k.get_ref().as_str()))
                    .map_or(name.span(), |(_, v)| v.span());
                check.err(span, e.to_string());
            }
            nodes.push(NodeDef {
                name: name.get_ref().clone(),
                listen,
                connect,
                serial_peers,
                strategy,
                max_restarts: n.max_restarts.unwrap_or(3),
                period: Duration::from_millis(n.period_ms.unwrap_or(5000)),
                config,
            });
        }
        if nodes.is_empty() {
            check.err(0..0, "the topology has no nodes: add a [nodes.NAME] table");
        }
        // A listen address belongs to one node.
        let mut listeners: HashMap<String, String> = HashMap::new();
        for (name, node) in &raw_nodes {
            for a in &node.get_ref().listen {
                if let Some(other) = listeners.insert(a.get_ref().clone(), name.get_ref().clone())
                    && &other != name.get_ref()
                {
                    check.err(
                        a.span(),
                        format!(
                            "address {:?} is already a listen address of node {other:?}",
                            a.get_ref()
                        ),
                    );
                }
            }
        }
        for (name, node) in &raw_nodes {
            for a in &node.get_ref().connect {
                if listeners.get(a.get_ref()) == Some(name.get_ref()) {
                    check.err(
                        a.span(),
                        format!(
                            "node {:?} connects to its own listen address {:?}",
                            name.get_ref(),
                            a.get_ref()
                        ),
                    );
                }
            }
        }
        let node_names: Vec<String> = nodes.iter().map(|n| n.name.clone()).collect();
        // A serial cable's `peer` is another node; a dialled cable ends at
        // a node that listens on a serial port (one-process runs replace
        // that by an in-memory link).
        for (name, node) in &raw_nodes {
            let n = node.get_ref();
            for (a, dial) in n
                .listen
                .iter()
                .map(|a| (a, false))
                .chain(n.connect.iter().map(|a| (a, true)))
            {
                let Some(peer) = a
                    .get_ref()
                    .parse::<Address>()
                    .ok()
                    .filter(|x| x.scheme() == oscloud_transport_serial::SCHEME)
                    .and_then(|x| x.param(SERIAL_PEER).map(str::to_owned))
                else {
                    continue;
                };
                let other = nodes.iter().find(|x| x.name == peer);
                if peer == *name.get_ref() || other.is_none() {
                    check.err(
                        a.span(),
                        format!(
                            "{SERIAL_PEER}={peer:?} must name another node (nodes: {})",
                            node_names.join(", ")
                        ),
                    );
                } else if dial
                    && !other.is_some_and(|o| {
                        o.listen
                            .iter()
                            .any(|l| l.scheme() == oscloud_transport_serial::SCHEME)
                    })
                {
                    check.err(
                        a.span(),
                        format!(
                            "node {peer:?} has no serial listen address for this cable to end at"
                        ),
                    );
                }
            }
        }

        // Servers, in file order.
        let mut raw_servers: Vec<_> = raw.servers.into_iter().collect();
        raw_servers.sort_by_key(|(k, _)| k.span().start);
        let mut servers = Vec::new();
        let mut group_names = HashSet::new();
        // Every declared name, even of a server with problems (so that its
        // pipes are not reported as dangling too).
        let declared: HashSet<String> = raw_servers
            .iter()
            .map(|(k, _)| k.get_ref().clone())
            .collect();
        for (name, server) in raw_servers {
            check_name(check, &name, "server");
            if name.get_ref().starts_with(RESERVED_PREFIX) {
                check.err(
                    name.span(),
                    format!("server names starting with {RESERVED_PREFIX:?} are reserved"),
                );
            }
            let s = server.into_inner();
            let node = match &s.node {
                Some(n) if node_names.contains(n.get_ref()) => n.get_ref().clone(),
                Some(n) => {
                    check.err(
                        n.span(),
                        format!(
                            "server {:?} is placed on unknown node {:?} (nodes: {})",
                            name.get_ref(),
                            n.get_ref(),
                            node_names.join(", ")
                        ),
                    );
                    continue;
                }
                None if node_names.len() == 1 => node_names[0].clone(),
                None => {
                    check.err(
                        name.span(),
                        format!(
                            "server {:?} needs `node = \"...\"`: the topology has several nodes",
                            name.get_ref()
                        ),
                    );
                    continue;
                }
            };
            let Some(kind) = kinds::kind(s.kind.get_ref()) else {
                check.err(
                    s.kind.span(),
                    format!(
                        "unknown server kind {:?} (known kinds: {})",
                        s.kind.get_ref(),
                        kinds::kind_names()
                    ),
                );
                continue;
            };
            let mut args = BTreeMap::new();
            for (key, value) in s.args {
                match kind.args.iter().find(|a| a.name == key.get_ref()) {
                    None => check.err(
                        key.span(),
                        format!(
                            "kind {:?} takes no argument {:?} (it takes: {})",
                            kind.name,
                            key.get_ref(),
                            kind.args
                                .iter()
                                .map(|a| a.name)
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    ),
                    Some(spec) if !spec.ty.accepts(value.get_ref()) => check.err(
                        value.span(),
                        format!(
                            "argument {:?} must be {}",
                            key.get_ref(),
                            spec.ty.describe()
                        ),
                    ),
                    Some(_) => {
                        args.insert(key.into_inner(), value.into_inner());
                    }
                }
            }
            for spec in kind.args.iter().filter(|a| a.required) {
                if !args.contains_key(spec.name) {
                    check.err(
                        name.span(),
                        format!(
                            "server {:?} (kind {:?}) needs argument {:?}: {}",
                            name.get_ref(),
                            kind.name,
                            spec.name,
                            spec.help
                        ),
                    );
                }
            }
            let args = Args(args);
            if let Some(mode) = args.str("mode")
                && mode.parse::<oscloud_servers::file::Framing>().is_err()
            {
                check.err(
                    name.span(),
                    format!(
                        "server {:?}: mode must be \"lines\" or \"chunks\", not {mode:?}",
                        name.get_ref()
                    ),
                );
            }
            let restart = match s.restart.as_ref().map(|r| (r.get_ref().as_str(), r.span())) {
                None | Some(("transient", _)) => Restart::Transient,
                Some(("permanent", _)) => Restart::Permanent,
                Some(("temporary", _)) => Restart::Temporary,
                Some((other, span)) => {
                    check.err(span, format!("unknown restart policy {other:?} (expected permanent, transient or temporary)"));
                    Restart::Transient
                }
            };
            let group = s.group.map(|g| {
                check_name(check, &g, "group");
                group_names.insert(g.get_ref().clone());
                g.into_inner()
            });
            servers.push(ServerDef {
                name: name.into_inner(),
                node,
                kind,
                args,
                restart,
                group,
            });
        }
        for s in &servers {
            if group_names.contains(&s.name) {
                check.err(0..0, format!("server {:?} has the name of a group", s.name));
            }
        }

        // Pipes.
        let mut pipes = Vec::new();
        let mut used_from: HashMap<End, usize> = HashMap::new();
        let mut used_to: HashMap<End, usize> = HashMap::new();
        let mut pipe_names: HashMap<String, usize> = HashMap::new();
        for p in raw.pipes {
            let line = check.lines.at(p.span().start).0;
            let p = p.into_inner();
            let from = ends(check, &p.from, "from");
            let to = ends(check, &p.to, "to");
            for (list, span, outgoing) in [(&from, p.from.span(), true), (&to, p.to.span(), false)]
            {
                for end in list {
                    let Some(server) = servers.iter().find(|s| s.name == end.server) else {
                        if declared.contains(&end.server) {
                            continue; // its own problem is reported
                        }
                        check.err(
                            span.clone(),
                            format!(
                                "pipe end {end}: no server named {:?} (dangling pipe end)",
                                end.server
                            ),
                        );
                        continue;
                    };
                    if server.group.is_some() {
                        check.err(span.clone(), format!("pipe end {end}: server {:?} is in a group; pipes need a server of its own", end.server));
                    }
                    let ports = if outgoing {
                        server.kind.outputs
                    } else {
                        server.kind.inputs
                    };
                    if !ports.contains(&end.port.as_str()) {
                        let dir = if outgoing { "output" } else { "input" };
                        let list = if ports.is_empty() {
                            "none".to_owned()
                        } else {
                            ports.join(", ")
                        };
                        check.err(
                            span.clone(),
                            format!("pipe end {end}: kind {:?} has no {dir} port {:?} ({dir} ports: {list})", server.kind.name, end.port),
                        );
                        continue;
                    }
                    let used = if outgoing {
                        &mut used_from
                    } else {
                        &mut used_to
                    };
                    if let Some(other) = used.insert(end.clone(), line) {
                        let hint = if outgoing {
                            "list several `to` in one pipe to split"
                        } else {
                            "list several `from` in one pipe to merge"
                        };
                        check.err(
                            span.clone(),
                            format!(
                                "port {end} is already used by the pipe on line {other} ({hint})"
                            ),
                        );
                    }
                }
            }
            let name = match &p.name {
                Some(n) => n.get_ref().clone(),
                None => from.first().map(End::to_string).unwrap_or_default(),
            };
            if let Some(other) = pipe_names.insert(name.clone(), line) {
                let span = p.name.as_ref().map_or(p.from.span(), Spanned::span);
                check.err(
                    span,
                    format!("duplicate pipe name {name:?} (also on line {other})"),
                );
            }
            let zenoh_tap = p.zenoh_tap.as_ref().and_then(|t| {
                let checked = t
                    .get_ref()
                    .parse::<Address>()
                    .map_err(|e| e.to_string())
                    .and_then(|a| {
                        if a.scheme() != oscloud_transport_zenoh::SCHEME {
                            return Err(
                                "a zenoh_tap is a zenoh://ROUTER:PORT/<cloud>/<node> address"
                                    .into(),
                            );
                        }
                        let path = a.path().trim_start_matches('/');
                        let (cloud, node) = path.split_once('/').unwrap_or((path, ""));
                        oscloud_transport_zenoh::tap_key(cloud, node, &name)
                            .map(|_| a)
                            .map_err(|e| e.to_string())
                    });
                match checked {
                    Ok(a) => Some(a),
                    Err(e) => {
                        check.err(t.span(), format!("bad zenoh_tap {:?}: {e}", t.get_ref()));
                        None
                    }
                }
            });
            pipes.push(PipeDef {
                name,
                from,
                to,
                zenoh_tap,
                line,
            });
        }

        let topo = Topology {
            path: path.to_owned(),
            nodes,
            servers,
            pipes,
        };
        // A pipe is wired on the node of its first destination: every
        // other end must be on that node or on a node it reaches over
        // links (directly, or through other nodes within both nodes'
        // `max_hops`: the nodes route for each other).
        if check.problems.is_empty() {
            let serial = topo.nodes.iter().any(|n| {
                n.listen
                    .iter()
                    .chain(&n.connect)
                    .any(|a| a.scheme() == oscloud_transport_serial::SCHEME)
            });
            for p in &topo.pipes {
                let at = topo.wiring_node(p);
                for end in p.from.iter().chain(&p.to) {
                    let node = topo.node_of(&end.server);
                    if node != at && !topo.reaches_within_hops(node, at) {
                        let (line, column) = (p.line, 1);
                        check.problems.push((
                            usize::MAX,
                            Problem {
                                line,
                                column,
                                message: format!(
                                    "pipe {:?}: {end} is on node {node:?} and the pipe is wired on node {at:?}, but the two nodes are not linked, directly or through other nodes within max_hops (add a listen/connect pair{})",
                                    p.name,
                                    if serial { "; a serial address names the node at the other end of its cable with ?peer=NODE" } else { "" }
                                ),
                            },
                        ));
                    }
                }
            }
        }
        topo
    }

    /// The node a server runs on ("" if unknown).
    pub fn node_of(&self, server: &str) -> &str {
        self.servers
            .iter()
            .find(|s| s.name == server)
            .map_or("", |s| s.node.as_str())
    }

    /// The server called `name`.
    pub fn server(&self, name: &str) -> Option<&ServerDef> {
        self.servers.iter().find(|s| s.name == name)
    }

    /// The node that wires `pipe`: its first destination's.
    pub fn wiring_node(&self, pipe: &PipeDef) -> &str {
        pipe.to.first().map_or("", |e| self.node_of(&e.server))
    }

    /// Whether nodes `a` and `b` are linked directly (one dials an
    /// address the other listens on).
    pub fn linked(&self, a: &str, b: &str) -> bool {
        let find = |n: &str| self.nodes.iter().find(|x| x.name == n);
        let (Some(a), Some(b)) = (find(a), find(b)) else {
            return false;
        };
        let dials = |x: &NodeDef, y: &NodeDef| {
            x.connect
                .iter()
                .any(|c| y.listen.iter().any(|l| reaches(c, l)))
        };
        let cabled = |x: &NodeDef, y: &NodeDef| x.serial_peers.iter().any(|(_, p)| *p == y.name);
        dials(a, b) || dials(b, a) || cabled(a, b) || cabled(b, a)
    }

    /// How many links the shortest way from node `a` to node `b` crosses
    /// (0 from a node to itself), if there is one.
    pub fn hops(&self, a: &str, b: &str) -> Option<usize> {
        let mut seen = vec![a];
        let mut frontier = vec![a];
        let mut hops = 0;
        while !frontier.is_empty() {
            if frontier.contains(&b) {
                return Some(hops);
            }
            hops += 1;
            let mut next = Vec::new();
            for x in frontier {
                for n in &self.nodes {
                    if !seen.contains(&n.name.as_str()) && self.linked(x, &n.name) {
                        seen.push(&n.name);
                        next.push(n.name.as_str());
                    }
                }
            }
            frontier = next;
        }
        None
    }

    /// Whether a server on node `a` is reachable from node `b` (or the
    /// other way): linked directly, or through other nodes by a way no
    /// longer than either node's `max_hops`.
    pub fn reaches_within_hops(&self, a: &str, b: &str) -> bool {
        let limit = [a, b]
            .iter()
            .filter_map(|n| self.node(n))
            .map(|n| n.config.max_hops)
            .min()
            .unwrap_or(0);
        self.hops(a, b).is_some_and(|h| h <= limit)
    }

    /// The node called `name`.
    pub fn node(&self, name: &str) -> Option<&NodeDef> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// The directory relative paths in arguments are taken from.
    pub fn base_dir(&self) -> PathBuf {
        match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        }
    }

    /// Whether `server` is an end of some pipe.
    pub fn in_pipes(&self, server: &str) -> bool {
        self.pipes
            .iter()
            .any(|p| p.from.iter().chain(&p.to).any(|e| e.server == server))
    }
}

impl Check<'_> {
    fn into_problems(mut self, file: String) -> Problems {
        self.problems.sort_by_key(|(at, p)| (p.line, *at));
        Problems {
            file,
            problems: self.problems.into_iter().map(|(_, p)| p).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn a(s: &str) -> Address {
        s.parse().unwrap()
    }

    #[test]
    fn reaches_matches_wildcard_listeners_and_websocket_parameters() {
        for (connect, listen, yes) in [
            ("tcp://127.0.0.1:7000", "tcp://0.0.0.0:7000", true),
            ("tcp://127.0.0.1:7000", "tcp://127.0.0.2:7000", false),
            (
                "ws://10.0.0.1:7780/oscloud",
                "ws://0.0.0.0:7780/oscloud",
                true,
            ),
            (
                "ws://10.0.0.1:7780/oscloud",
                "ws://0.0.0.0:7780/other",
                false,
            ),
            ("ws://10.0.0.1:7780", "ws://0.0.0.0:7780/", true),
            (
                "ws://10.0.0.1:7780/oscloud",
                "wss://0.0.0.0:7780/oscloud",
                false,
            ),
            ("ws://10.0.0.1:7780/oscloud", "tcp://0.0.0.0:7780", false),
            (
                "wss://node.example:7443/o?ca=/ca.pem",
                "wss://node.example:7443/o?cert=/c.pem&key=/k.pem",
                true,
            ),
            (
                "wss://other.example:7443/o",
                "wss://node.example:7443/o",
                false,
            ),
        ] {
            assert_eq!(
                reaches(&a(connect), &a(listen)),
                yes,
                "{connect} → {listen}"
            );
        }
    }
}
