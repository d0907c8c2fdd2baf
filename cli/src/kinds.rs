//! The server kinds a topology file can name, and how each is built.

use std::path::Path;
use std::time::Duration;

use oscloud_actors::{ChildSpec, ServerOptions};
use oscloud_servers::file::{FileSource, Framing};
use oscloud_servers::jsonl::JsonlSink;
use oscloud_servers::pool::PoolSpec;
use oscloud_servers::process::ProcessSpec;
use oscloud_servers::pty::PtySpec;
use oscloud_servers::sink::Target;
use oscloud_servers::stdin::StdinSource;
use oscloud_servers::stdout::StdoutSink;
use oscloud_servers::tee::TeeServer;

use crate::topology::{Args, ServerDef};

/// The type of one argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArgType {
    /// A string.
    Str,
    /// A non-negative integer.
    Int,
    /// `true` or `false`.
    Bool,
    /// An array of strings.
    StrList,
}

impl ArgType {
    /// How the type is called in messages.
    pub fn describe(self) -> &'static str {
        match self {
            ArgType::Str => "a string",
            ArgType::Int => "a non-negative integer",
            ArgType::Bool => "true or false",
            ArgType::StrList => "an array of strings",
        }
    }

    /// Whether `v` has this type.
    pub fn accepts(self, v: &toml::Value) -> bool {
        match self {
            ArgType::Str => v.is_str(),
            ArgType::Int => v.as_integer().is_some_and(|i| i >= 0),
            ArgType::Bool => v.is_bool(),
            ArgType::StrList => v
                .as_array()
                .is_some_and(|a| a.iter().all(toml::Value::is_str)),
        }
    }
}

/// One argument a kind takes.
#[derive(Debug, Clone, Copy)]
pub struct ArgSpec {
    /// Its key in `args`.
    pub name: &'static str,
    /// Its type.
    pub ty: ArgType,
    /// Whether it must be given.
    pub required: bool,
    /// What it does.
    pub help: &'static str,
}

const fn arg(name: &'static str, ty: ArgType, required: bool, help: &'static str) -> ArgSpec {
    ArgSpec {
        name,
        ty,
        required,
        help,
    }
}

/// What the runtime needs to build a server of some kind.
#[derive(Debug, Clone, Copy)]
pub struct BuildContext<'a> {
    /// The topology file's directory: relative paths are taken from it.
    pub base: &'a Path,
    /// Whether the server is an end of some pipe.
    pub in_pipes: bool,
}

type BuildFn = fn(&ServerDef, &BuildContext<'_>) -> Result<ChildSpec, String>;

/// A server kind.
#[derive(Debug, Clone, Copy)]
pub struct Kind {
    /// The name used in `kind = "..."`.
    pub name: &'static str,
    /// One line about it.
    pub summary: &'static str,
    /// Ports that take a stream (pipe `to` ends).
    pub inputs: &'static [&'static str],
    /// Ports that give a stream (pipe `from` ends).
    pub outputs: &'static [&'static str],
    /// Its arguments.
    pub args: &'static [ArgSpec],
    /// Whether it stops by itself once its inputs have ended (a sink): a
    /// topology is finished when every such server fed by a pipe stopped.
    pub finishes: bool,
    build: BuildFn,
}

impl Kind {
    /// Build the supervisor child for `server`.
    pub fn child_spec(
        &self,
        server: &ServerDef,
        cx: &BuildContext<'_>,
    ) -> Result<ChildSpec, String> {
        (self.build)(server, cx)
    }
}

use ArgType::{Bool, Int, Str, StrList};

/// Every kind the `oscloud` command knows.
pub const KINDS: &[Kind] = &[
    Kind {
        name: "process",
        summary: "any stdio program: its stdin is port `in`, its stdout port `out`; calls are lines",
        inputs: &["in"],
        outputs: &["out"],
        args: &[
            arg("program", Str, true, "the program (looked up in PATH)"),
            arg("args", StrList, false, "its arguments"),
            arg(
                "lines",
                Bool,
                false,
                "one frame per line on in/out (default true)",
            ),
            arg(
                "calls",
                Bool,
                false,
                "keep a child for calls (default: only when in no pipe)",
            ),
            arg(
                "reply_timeout_ms",
                Int,
                false,
                "longest wait for a reply line (5000)",
            ),
        ],
        finishes: false,
        build: build_process,
    },
    Kind {
        name: "pty",
        summary: "a program under a pseudo-terminal: keys into port `in`, screen out of port `out`",
        inputs: &["in"],
        outputs: &["out"],
        args: &[
            arg("program", Str, true, "the program (looked up in PATH)"),
            arg("args", StrList, false, "its arguments"),
            arg("rows", Int, false, "terminal rows (24)"),
            arg("cols", Int, false, "terminal columns (80)"),
        ],
        finishes: false,
        build: build_pty,
    },
    Kind {
        name: "file",
        summary: "a file as a stream on port `out` (lines or chunks, paced, looped)",
        inputs: &[],
        outputs: &["out"],
        args: &[
            arg(
                "path",
                Str,
                true,
                "the file (relative to the topology file)",
            ),
            arg("mode", Str, false, "\"lines\" (default) or \"chunks\""),
            arg("interval_ms", Int, false, "wait before each frame"),
            arg("repeat", Bool, false, "start again at the end, forever"),
        ],
        finishes: false,
        build: build_file,
    },
    Kind {
        name: "stdin",
        summary: "this process's standard input as a stream on port `out`",
        inputs: &[],
        outputs: &["out"],
        args: &[arg("mode", Str, false, "\"lines\" (default) or \"chunks\"")],
        finishes: false,
        build: build_stdin,
    },
    Kind {
        name: "jsonl",
        summary: "a JSON-lines logger: every frame of port `in` as a JSON line",
        inputs: &["in"],
        outputs: &[],
        args: &[
            arg(
                "path",
                Str,
                false,
                "the log file, or \"-\" for standard output (default)",
            ),
            arg("append", Bool, false, "append instead of truncating"),
            arg("timestamps", Bool, false, "add \"ts\" (ms since the epoch)"),
        ],
        finishes: true,
        build: build_jsonl,
    },
    Kind {
        name: "stdout",
        summary: "a terminal: the raw bytes of port `in` on standard output (or a file)",
        inputs: &["in"],
        outputs: &[],
        args: &[
            arg(
                "path",
                Str,
                false,
                "a file, or \"-\" for standard output (default)",
            ),
            arg("append", Bool, false, "append instead of truncating"),
            arg(
                "newline",
                Bool,
                false,
                "a newline after each frame (default true)",
            ),
        ],
        finishes: true,
        build: build_stdout,
    },
    Kind {
        name: "tee",
        summary: "passes port `in` to port `out` and appends a copy of each frame to a file",
        inputs: &["in"],
        outputs: &["out"],
        args: &[
            arg(
                "path",
                Str,
                true,
                "the copy's file, or \"-\" for standard output",
            ),
            arg("append", Bool, false, "append instead of truncating"),
            arg(
                "newline",
                Bool,
                false,
                "a newline after each copied frame (default true)",
            ),
        ],
        finishes: true,
        build: build_tee,
    },
    Kind {
        name: "pool",
        summary: "a pool of CPUs: calls submit jobs to a group's workers on any node, spread by load, retried when a worker's node dies",
        inputs: &[],
        outputs: &[],
        args: &[
            arg(
                "queue_limit",
                Int,
                false,
                "most jobs queued or running; more are refused busy (10000)",
            ),
            arg(
                "max_attempts",
                Int,
                false,
                "most times a job is sent to a worker (3; 1 never retries)",
            ),
            arg(
                "per_worker",
                Int,
                false,
                "jobs in flight per worker unless it says (2)",
            ),
            arg(
                "attempt_timeout_ms",
                Int,
                false,
                "longest one attempt may take before another worker is tried (30000)",
            ),
            arg(
                "job_timeout_ms",
                Int,
                false,
                "longest a job may take from submission to its result (60000)",
            ),
        ],
        finishes: false,
        build: build_pool,
    },
];

/// The kind called `name`.
pub fn kind(name: &str) -> Option<&'static Kind> {
    KINDS.iter().find(|k| k.name == name)
}

/// The names of every kind, for messages.
pub fn kind_names() -> String {
    KINDS.iter().map(|k| k.name).collect::<Vec<_>>().join(", ")
}

fn options(server: &ServerDef) -> ServerOptions {
    match &server.group {
        Some(group) => ServerOptions::new(group.clone()).group(),
        None => ServerOptions::new(server.name.clone()),
    }
}

fn finish(server: &ServerDef, spec: ChildSpec) -> ChildSpec {
    spec.id(server.name.clone()).restart(server.restart)
}

fn target(args: &Args, cx: &BuildContext<'_>) -> Target {
    match args.str("path") {
        None | Some("-") => Target::Stdout,
        Some(p) => Target::File {
            path: cx.base.join(p),
            append: args.bool("append").unwrap_or(false),
        },
    }
}

fn framing(args: &Args) -> Result<Framing, String> {
    args.str("mode").unwrap_or("lines").parse()
}

fn build_process(s: &ServerDef, cx: &BuildContext<'_>) -> Result<ChildSpec, String> {
    let a = &s.args;
    let mut spec = ProcessSpec::new(a.str("program").unwrap_or_default())
        .args(a.list("args"))
        .lines(a.bool("lines").unwrap_or(true))
        .calls(a.bool("calls").unwrap_or(!cx.in_pipes));
    if let Some(ms) = a.int("reply_timeout_ms") {
        spec = spec.reply_timeout(Duration::from_millis(ms));
    }
    Ok(finish(s, spec.child_spec(options(s))))
}

fn build_pty(s: &ServerDef, _cx: &BuildContext<'_>) -> Result<ChildSpec, String> {
    let a = &s.args;
    let rows = u16::try_from(a.int("rows").unwrap_or(24)).map_err(|_| "rows is too large")?;
    let cols = u16::try_from(a.int("cols").unwrap_or(80)).map_err(|_| "cols is too large")?;
    let spec = PtySpec::new(a.str("program").unwrap_or_default())
        .args(a.list("args"))
        .size(rows, cols);
    Ok(finish(s, spec.child_spec(options(s))))
}

fn build_file(s: &ServerDef, cx: &BuildContext<'_>) -> Result<ChildSpec, String> {
    let a = &s.args;
    let mut src = FileSource::new(cx.base.join(a.str("path").unwrap_or_default()))
        .framing(framing(a)?)
        .repeat(a.bool("repeat").unwrap_or(false));
    if let Some(ms) = a.int("interval_ms") {
        src = src.interval(Duration::from_millis(ms));
    }
    Ok(finish(s, src.child_spec(options(s))))
}

fn build_stdin(s: &ServerDef, _cx: &BuildContext<'_>) -> Result<ChildSpec, String> {
    let src = StdinSource::new().framing(framing(&s.args)?);
    Ok(finish(s, src.child_spec(options(s))))
}

fn build_jsonl(s: &ServerDef, cx: &BuildContext<'_>) -> Result<ChildSpec, String> {
    let sink =
        JsonlSink::new(target(&s.args, cx)).timestamps(s.args.bool("timestamps").unwrap_or(false));
    Ok(finish(s, sink.child_spec(options(s))))
}

fn build_stdout(s: &ServerDef, cx: &BuildContext<'_>) -> Result<ChildSpec, String> {
    let sink = StdoutSink::new(target(&s.args, cx)).newline(s.args.bool("newline").unwrap_or(true));
    Ok(finish(s, sink.child_spec(options(s))))
}

fn build_tee(s: &ServerDef, cx: &BuildContext<'_>) -> Result<ChildSpec, String> {
    let tee = TeeServer::new(target(&s.args, cx)).newline(s.args.bool("newline").unwrap_or(true));
    Ok(finish(s, tee.child_spec(options(s))))
}

fn build_pool(s: &ServerDef, _cx: &BuildContext<'_>) -> Result<ChildSpec, String> {
    let a = &s.args;
    let mut spec = PoolSpec::new();
    if let Some(n) = a.int("queue_limit") {
        spec = spec.queue_limit(usize::try_from(n).map_err(|_| "queue_limit is too large")?);
    }
    if let Some(n) = a.int("max_attempts") {
        spec = spec.max_attempts(u32::try_from(n).map_err(|_| "max_attempts is too large")?);
    }
    if let Some(n) = a.int("per_worker") {
        spec = spec.per_worker(usize::try_from(n).map_err(|_| "per_worker is too large")?);
    }
    if let Some(ms) = a.int("attempt_timeout_ms") {
        spec = spec.attempt_timeout(Duration::from_millis(ms));
    }
    if let Some(ms) = a.int("job_timeout_ms") {
        spec = spec.job_timeout(Duration::from_millis(ms));
    }
    Ok(finish(s, spec.child_spec(options(s))))
}
