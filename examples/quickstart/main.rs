//! The oscloud quickstart: a one-process cloud from the seed topologies.
//!
//! ```text
//! sensor ──pipe──▶ parser ──split──▶ logger (JSON lines)
//!                            └─────▶ rules ──cast──▶ alert
//! ```
//!
//! - `sensor` writes raw text readings into its `out` port.
//! - `parser` reads its `in` port, parses each line into a [`Reading`] and
//!   writes it (MessagePack) to its `out` port.
//! - The kernel connects `sensor.out` to `parser.in` and splits `parser.out`
//!   to `logger.in` and to the rules engine.
//! - `logger` prints every reading as a JSON line.
//! - `rules` raises an [`Alert`] (a cast to `alert`) for hot readings. A
//!   poison reading (not a number) makes it crash; its supervisor restarts
//!   it and the stream goes on.
//!
//! Run it with `cargo run --release --example quickstart`. It ends by itself
//! with a summary; `RUST_LOG=info` (or `debug`) adds the libraries' own logs.
#![allow(clippy::print_stdout)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use oscloud_actors::{
    ChildSpec, Context, PipeOutcome, Server, ServerError, ServerRef, Strategy, Supervisor,
    SupervisorSpec, async_trait, decode, encode,
};
use oscloud_core::plumbing::{Branch, connect, split};
use oscloud_core::{
    Capabilities, ExitReason, Kernel, PipeEnd, PipeReader, PortDirection, RegistryEvent,
};
use serde::{Deserialize, Serialize};

/// How many readings the sensor produces.
const READINGS: u64 = 20;
/// The reading (1-based) that is poison.
const POISON_AT: u64 = 12;
/// Readings above this raise an alert.
const ALERT_ABOVE: f64 = 30.0;

/// A parsed sensor reading, as it travels between servers.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Reading {
    seq: u64,
    celsius: f64,
}

/// An alert raised by the rules engine.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Alert {
    seq: u64,
    celsius: f64,
    rule: String,
}

/// What the rules engine and the alert server take: an item as a cast, or
/// `Count` as a call answered with how many items were handled. A call
/// queues behind earlier casts, so its answer also says "all handled".
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
enum Ask<T> {
    Item(T),
    Count,
}

/// Counters for the summary, shared by the servers of this demo.
#[derive(Debug, Default)]
struct Tally {
    produced: AtomicU64,
    parsed: AtomicU64,
    logged: AtomicU64,
    judged: AtomicU64,
    alerts: AtomicU64,
}

/// Prints one trace line with the time since start.
#[derive(Debug, Clone)]
struct Trace(Instant);

impl Trace {
    fn say(&self, who: &str, what: impl std::fmt::Display) {
        let t = self.0.elapsed().as_secs_f64();
        println!("[{t:6.3}s] {who:<10} {what}");
    }
}

// ---------------------------------------------------------------- sensor

/// Writes `READINGS` raw lines ("<seq> <celsius>") to whoever opens `out`.
struct Sensor {
    trace: Trace,
    tally: Arc<Tally>,
}

#[async_trait]
impl Server for Sensor {
    type Request = ();
    type Reply = ();
    type State = ();

    async fn init(&self, _ctx: &mut Context) -> Result<(), ServerError> {
        Ok(())
    }

    /// A call is a ping: it answers once earlier messages were handled.
    async fn handle_call(&self, _: &mut Context, _: &mut (), _: ()) -> Result<(), ServerError> {
        Ok(())
    }

    fn ports(&self) -> Vec<(String, PortDirection)> {
        vec![("out".to_owned(), PortDirection::Out)]
    }

    async fn handle_pipe(
        &self,
        ctx: &mut Context,
        _state: &mut (),
        port: String,
        end: PipeEnd,
    ) -> Result<PipeOutcome, ServerError> {
        if port != "out" {
            return Ok(PipeOutcome::NoSuchPort);
        }
        let (trace, tally) = (self.trace.clone(), self.tally.clone());
        ctx.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(25));
            for seq in 1..=READINGS {
                tick.tick().await;
                // A warm room with a heat spike, and one broken reading.
                let line = if seq == POISON_AT {
                    format!("{seq} NaN")
                } else {
                    let celsius = 21.0 + (seq as f64 * 0.7).sin() * 4.0 + spike(seq);
                    format!("{seq} {celsius:.1}")
                };
                trace.say("sensor", format!("→ {line:?}"));
                if end.send(Bytes::from(line)).await.is_err() {
                    return; // nobody reads any more
                }
                tally.produced.fetch_add(1, Ordering::Relaxed);
            }
            // Dropping `end` closes the pipe: end of stream flows downstream.
        });
        Ok(PipeOutcome::Accepted)
    }
}

fn spike(seq: u64) -> f64 {
    if (6..=7).contains(&seq) || seq == 17 {
        13.0
    } else {
        0.0
    }
}

// ---------------------------------------------------------------- parser

/// Reads raw lines on `in`, writes [`Reading`]s on `out`.
struct Parser {
    trace: Trace,
    tally: Arc<Tally>,
}

#[derive(Default)]
struct ParserState {
    input: Option<PipeReader>,
    output: Option<PipeEnd>,
}

#[async_trait]
impl Server for Parser {
    type Request = ();
    type Reply = ();
    type State = ParserState;

    async fn init(&self, _ctx: &mut Context) -> Result<ParserState, ServerError> {
        Ok(ParserState::default())
    }

    /// A call is a ping: it answers once earlier messages were handled.
    async fn handle_call(
        &self,
        _: &mut Context,
        _: &mut ParserState,
        _: (),
    ) -> Result<(), ServerError> {
        Ok(())
    }

    fn ports(&self) -> Vec<(String, PortDirection)> {
        vec![
            ("in".to_owned(), PortDirection::In),
            ("out".to_owned(), PortDirection::Out),
        ]
    }

    async fn handle_pipe(
        &self,
        ctx: &mut Context,
        state: &mut ParserState,
        port: String,
        end: PipeEnd,
    ) -> Result<PipeOutcome, ServerError> {
        match port.as_str() {
            "in" => state.input = Some(end.split().0),
            "out" => state.output = Some(end),
            _ => return Ok(PipeOutcome::NoSuchPort),
        }
        // Once both ports are attached, run the parse loop.
        if state.input.is_none() || state.output.is_none() {
            return Ok(PipeOutcome::Accepted);
        }
        if let (Some(mut input), Some(output)) = (state.input.take(), state.output.take()) {
            let (trace, tally) = (self.trace.clone(), self.tally.clone());
            ctx.spawn(async move {
                while let Some(line) = input.recv().await {
                    let text = String::from_utf8_lossy(&line);
                    let Some(reading) = parse(&text) else {
                        trace.say("parser", format!("skipped malformed line {text:?}"));
                        continue;
                    };
                    tally.parsed.fetch_add(1, Ordering::Relaxed);
                    let Ok(bytes) = encode(&reading) else {
                        continue;
                    };
                    if output.send(bytes).await.is_err() {
                        return;
                    }
                }
            });
        }
        Ok(PipeOutcome::Accepted)
    }
}

fn parse(line: &str) -> Option<Reading> {
    let (seq, celsius) = line.split_once(' ')?;
    Some(Reading {
        seq: seq.parse().ok()?,
        celsius: celsius.parse().ok()?,
    })
}

// ---------------------------------------------------------------- logger

/// Prints every [`Reading`] arriving on `in` as a JSON line.
struct Logger {
    trace: Trace,
    tally: Arc<Tally>,
}

#[async_trait]
impl Server for Logger {
    type Request = ();
    type Reply = ();
    type State = ();

    async fn init(&self, _ctx: &mut Context) -> Result<(), ServerError> {
        Ok(())
    }

    /// A call is a ping: it answers once earlier messages were handled.
    async fn handle_call(&self, _: &mut Context, _: &mut (), _: ()) -> Result<(), ServerError> {
        Ok(())
    }

    fn ports(&self) -> Vec<(String, PortDirection)> {
        vec![("in".to_owned(), PortDirection::In)]
    }

    async fn handle_pipe(
        &self,
        ctx: &mut Context,
        _state: &mut (),
        port: String,
        end: PipeEnd,
    ) -> Result<PipeOutcome, ServerError> {
        if port != "in" {
            return Ok(PipeOutcome::NoSuchPort);
        }
        let (trace, tally) = (self.trace.clone(), self.tally.clone());
        let (mut input, _) = end.split();
        ctx.spawn(async move {
            while let Some(frame) = input.recv().await {
                let Ok(reading) = decode::<Reading>(&frame) else {
                    continue;
                };
                let json = serde_json::json!({ "seq": reading.seq, "celsius": reading.celsius });
                trace.say("logger", json);
                tally.logged.fetch_add(1, Ordering::Relaxed);
            }
        });
        Ok(PipeOutcome::Accepted)
    }
}

// ---------------------------------------------------------------- rules

/// Judges each [`Reading`] (a cast); hot ones become an [`Alert`] cast to
/// `alert`. Crashes on a reading that is not a number.
struct Rules {
    trace: Trace,
    tally: Arc<Tally>,
}

#[async_trait]
impl Server for Rules {
    type Request = Ask<Reading>;
    type Reply = u64;
    type State = ServerRef;

    async fn init(&self, ctx: &mut Context) -> Result<ServerRef, ServerError> {
        self.trace.say("rules", "started");
        Ok(ServerRef::new(ctx.kernel(), "alert"))
    }

    async fn handle_cast(
        &self,
        _ctx: &mut Context,
        alert: &mut ServerRef,
        ask: Ask<Reading>,
    ) -> Result<(), ServerError> {
        let Ask::Item(reading) = ask else {
            return Ok(());
        };
        if reading.celsius.is_nan() {
            self.trace.say(
                "rules",
                format!("poison reading #{}: crashing", reading.seq),
            );
            return Err(format!("reading #{} is not a number", reading.seq).into());
        }
        self.tally.judged.fetch_add(1, Ordering::Relaxed);
        if reading.celsius > ALERT_ABOVE {
            let a = Alert {
                seq: reading.seq,
                celsius: reading.celsius,
                rule: format!("above {ALERT_ABOVE} °C"),
            };
            alert.cast(encode(&a)?).await?;
        }
        Ok(())
    }

    async fn handle_call(
        &self,
        _ctx: &mut Context,
        _alert: &mut ServerRef,
        _ask: Ask<Reading>,
    ) -> Result<u64, ServerError> {
        Ok(self.tally.judged.load(Ordering::Relaxed))
    }
}

// ---------------------------------------------------------------- alert

/// Receives [`Alert`]s.
struct AlertOut {
    trace: Trace,
    tally: Arc<Tally>,
}

#[async_trait]
impl Server for AlertOut {
    type Request = Ask<Alert>;
    type Reply = u64;
    type State = ();

    async fn init(&self, _ctx: &mut Context) -> Result<(), ServerError> {
        Ok(())
    }

    async fn handle_call(
        &self,
        _: &mut Context,
        _: &mut (),
        _: Ask<Alert>,
    ) -> Result<u64, ServerError> {
        Ok(self.tally.alerts.load(Ordering::Relaxed))
    }

    async fn handle_cast(
        &self,
        _: &mut Context,
        _: &mut (),
        ask: Ask<Alert>,
    ) -> Result<(), ServerError> {
        let Ask::Item(a) = ask else { return Ok(()) };
        self.trace.say(
            "ALERT",
            format!("reading #{} at {:.1} °C ({})", a.seq, a.celsius, a.rule),
        );
        self.tally.alerts.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

// ---------------------------------------------------------------- wiring

/// Feeds every frame of `input` to the server named `to` as a cast, by name,
/// so it keeps feeding the server across restarts. Frames that arrive while
/// the server is restarting wait for it to be registered again.
async fn feed_by_name(kernel: Kernel, mut input: PipeReader, to: &str, trace: Trace) -> u64 {
    let target = ServerRef::new(&kernel, to);
    let mut fed = 0;
    while let Some(frame) = input.recv().await {
        loop {
            match target.cast(frame.clone()).await {
                Ok(()) => break,
                Err(err) => {
                    trace.say("feeder", format!("{to} unavailable ({err}); waiting"));
                    let mut watch = kernel.registry().watch();
                    if kernel.registry().lookup(to).is_ok() {
                        continue;
                    }
                    while let Some(ev) = watch.next().await {
                        if matches!(&ev, RegistryEvent::Added(e) if e.name() == to) {
                            break;
                        }
                    }
                }
            }
        }
        fed += 1;
    }
    fed
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "error".into()),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    let trace = Trace(Instant::now());
    let tally = Arc::new(Tally::default());
    let kernel = Kernel::new();
    trace.say("kernel", format!("node {} up", kernel.node().short()));

    // Show the supervisor at work: print every registry change.
    let mut watch = kernel.registry().watch();
    let watch_trace = trace.clone();
    tokio::spawn(async move {
        while let Some(ev) = watch.next().await {
            match ev {
                RegistryEvent::Added(e) => {
                    watch_trace.say("registry", format!("+ {} ({})", e.name(), e.id()))
                }
                RegistryEvent::Removed { entry, reason } => {
                    let note = match reason {
                        ExitReason::Failed(_) => " → the supervisor restarts it",
                        _ => "",
                    };
                    watch_trace.say("registry", format!("- {} ({reason}){note}", entry.name()))
                }
            }
        }
    });

    // The servers, under one one-for-one supervisor. Sinks start first.
    let (t, c) = (trace.clone(), tally.clone());
    let (t2, c2) = (trace.clone(), tally.clone());
    let (t3, c3) = (trace.clone(), tally.clone());
    let (t4, c4) = (trace.clone(), tally.clone());
    let (t5, c5) = (trace.clone(), tally.clone());
    let tree = Supervisor::start(
        &kernel,
        SupervisorSpec::new("root")
            .strategy(Strategy::OneForOne)
            .intensity(3, Duration::from_secs(5))
            .child(ChildSpec::server(
                oscloud_actors::ServerOptions::new("alert")
                    .capabilities(Capabilities::new().accepts("alert")),
                move || AlertOut {
                    trace: t.clone(),
                    tally: c.clone(),
                },
            ))
            .child(ChildSpec::server(
                oscloud_actors::ServerOptions::new("rules")
                    .capabilities(Capabilities::new().accepts("reading").produces("alert")),
                move || Rules {
                    trace: t2.clone(),
                    tally: c2.clone(),
                },
            ))
            .child(ChildSpec::server(
                oscloud_actors::ServerOptions::new("logger")
                    .capabilities(Capabilities::new().accepts("reading").feature("json")),
                move || Logger {
                    trace: t3.clone(),
                    tally: c3.clone(),
                },
            ))
            .child(ChildSpec::server(
                oscloud_actors::ServerOptions::new("parser")
                    .capabilities(Capabilities::new().accepts("text").produces("reading")),
                move || Parser {
                    trace: t4.clone(),
                    tally: c4.clone(),
                },
            ))
            .child(ChildSpec::server(
                oscloud_actors::ServerOptions::new("sensor")
                    .capabilities(Capabilities::new().produces("text")),
                move || Sensor {
                    trace: t5.clone(),
                    tally: c5.clone(),
                },
            )),
    )
    .await?;

    // The wiring is configuration: the kernel joins the servers' ports.
    let parser = ServerRef::lookup(&kernel, "parser")?;
    let parser_in = parser.open_pipe("in").await?;
    let parser_out = parser.open_pipe("out").await?;
    let logger_in = ServerRef::lookup(&kernel, "logger")?
        .open_pipe("in")
        .await?;
    let (to_rules, rules_feed) = kernel.pipe();
    let fanout = split(
        parser_out.split().0,
        vec![Branch::block(logger_in.split().1), Branch::block(to_rules)],
    );
    let feeder = tokio::spawn(feed_by_name(
        kernel.clone(),
        rules_feed,
        "rules",
        trace.clone(),
    ));
    let sensor_out = ServerRef::lookup(&kernel, "sensor")?
        .open_pipe("out")
        .await?;
    let link = connect(sensor_out.split().0, parser_in.split().1);
    trace.say(
        "kernel",
        "wired sensor → parser → split(logger, rules) → alert",
    );

    // The sensor ends the stream; the end flows through every pipe.
    link.finished().await?;
    fanout.finished().await?;
    let fed = feeder.await?;
    // Casts are asynchronous: a call queues behind them, so once the rules
    // engine and then the alert server answer, everything was handled.
    let count = encode(&Ask::<()>::Count)?;
    let second = Duration::from_secs(1);
    ServerRef::lookup(&kernel, "rules")?
        .call(count.clone(), second)
        .await?;
    ServerRef::lookup(&kernel, "alert")?
        .call(count, second)
        .await?;

    let stats = tree.stats();
    tree.stop().await;
    tree.wait().await?;

    let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
    println!();
    println!("summary");
    println!("  readings in        {}", n(&tally.produced));
    println!("  parsed             {}", n(&tally.parsed));
    println!("  logged (JSON)      {}", n(&tally.logged));
    println!("  fed to rules       {fed}");
    println!(
        "  judged by rules    {} (+1 poison that crashed it)",
        n(&tally.judged)
    );
    println!("  alerts out         {}", n(&tally.alerts));
    println!(
        "  restarts           {} (rules: {})",
        stats.total_restarts(),
        stats.restarts("rules")
    );
    Ok(())
}
