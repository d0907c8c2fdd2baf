//! The pool: every worker of a group, on any node, as one pool of CPUs
//! (`oscloud_servers::pool`).
//!
//! Three roles, each its own process (or all on one machine):
//!
//! ```text
//! pool serve  --listen ADDR                  # a node with the pool server "pool"
//! pool worker --connect ADDR [--group G]     # a Rust worker of G (default "square")
//! pool submit --connect ADDR [--group G] ITEM...   # one job per item, results in order
//! ```
//!
//! A job here is a string (a number), its result a string: a worker of
//! `square` answers `"7"` with `"49"`. Workers of the same group can be
//! written in any language: this Rust one, a Python function
//! (`oscloud.pool.worker`), a C program (`bindings-c/c/tests/pool_worker.c`),
//! or any stdio program behind the process server
//! (`examples/topologies/pool.toml`). Kill a worker mid-run (`kill -9`):
//! its jobs go to the others, and every item still gets one result.
//!
//! ```text
//! cargo run -p oscloud-examples --example pool -- serve --listen tcp://127.0.0.1:7410 &
//! cargo run -p oscloud-examples --example pool -- worker --connect tcp://127.0.0.1:7410 &
//! cargo run -p oscloud-examples --example pool -- worker --connect tcp://127.0.0.1:7410 &
//! cargo run -p oscloud-examples --example pool -- submit --connect tcp://127.0.0.1:7410 1 2 3
//! ```
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use oscloud_actors::{
    ChildSpec, Context, Server, ServerError, ServerOptions, ServerRef, Supervisor, SupervisorSpec,
    async_trait,
};
use oscloud_core::address::Address;
use oscloud_core::transport::Transports;
use oscloud_core::{Kernel, Node};
use oscloud_servers::pool::{PoolReply, PoolRequest, PoolSpec};
use oscloud_transport_tcp::TcpTransport;
use oscloud_transport_unix::UnixTransport;

/// A worker: a number (as a string) in, its square (as a string) out.
struct Square;

#[async_trait]
impl Server for Square {
    type Request = String;
    type Reply = String;
    type State = ();

    async fn init(&self, _ctx: &mut Context) -> Result<(), ServerError> {
        Ok(())
    }

    async fn handle_call(
        &self,
        _ctx: &mut Context,
        _: &mut (),
        n: String,
    ) -> Result<String, ServerError> {
        let n: i64 = n.trim().parse()?;
        Ok(n.checked_mul(n).ok_or("too large")?.to_string())
    }
}

struct Args {
    role: String,
    listen: Vec<Address>,
    connect: Vec<Address>,
    group: String,
    items: Vec<String>,
}

fn parse() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let role = it.next().ok_or("usage: pool serve|worker|submit ...")?;
    let mut a = Args {
        role,
        listen: Vec::new(),
        connect: Vec::new(),
        group: "square".to_owned(),
        items: Vec::new(),
    };
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--listen" => a.listen.push(value()?.parse().map_err(|e| format!("{e}"))?),
            "--connect" => a
                .connect
                .push(value()?.parse().map_err(|e| format!("{e}"))?),
            "--group" => a.group = value()?,
            other => a.items.push(other.to_owned()),
        }
    }
    Ok(a)
}

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = parse()?;
    let kernel = Kernel::new();
    let transports = Transports::new()
        .with(Arc::new(TcpTransport))
        .with(Arc::new(UnixTransport));
    let node = Node::new(kernel.clone(), transports);
    for addr in &args.listen {
        println!("listening on {}", node.listen(addr).await?);
    }
    for addr in &args.connect {
        node.connect(addr).await?;
    }
    // Supervised: a worker that fails a job (a bad number) starts again.
    let child = match args.role.as_str() {
        "serve" => PoolSpec::new().child_spec("pool"),
        "worker" => ChildSpec::server(ServerOptions::new(args.group.clone()).group(), || Square),
        "submit" => {
            submit(&kernel, &args.group, &args.items).await?;
            node.shutdown();
            return Ok(());
        }
        other => return Err(format!("unknown role {other:?}: serve, worker or submit").into()),
    };
    let _tree = Supervisor::start(&kernel, SupervisorSpec::new("root").child(child)).await?;
    println!("{} running; Ctrl-C stops", args.role);
    tokio::signal::ctrl_c().await?;
    node.shutdown();
    Ok(())
}

/// Submit one job per item, all at once, and print the results in order.
async fn submit(
    kernel: &Kernel,
    group: &str,
    items: &[String],
) -> Result<(), Box<dyn std::error::Error>> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while kernel.registry().lookup("pool").is_err() {
        if Instant::now() > deadline {
            return Err("no server \"pool\" within 10 s".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pool = ServerRef::new(kernel, "pool").typed::<PoolRequest, PoolReply>();
    let jobs = items.iter().map(|item| {
        let pool = pool.clone();
        async move {
            let job = PoolRequest::submit(group, oscloud_actors::encode(item)?);
            pool.call(&job, Duration::from_secs(60)).await
        }
    });
    for (item, reply) in items.iter().zip(futures::future::join_all(jobs).await) {
        match reply? {
            PoolReply::Done(bytes) => {
                println!("{item} -> {}", oscloud_actors::decode::<String>(&bytes)?);
            }
            other => println!("{item} -> error {other:?}"),
        }
    }
    if let PoolReply::Stats(s) = pool
        .call(&PoolRequest::Stats, Duration::from_secs(5))
        .await?
    {
        println!(
            "pool: {} done, {} failed, {} retried, {} duplicate results dropped",
            s.done, s.failed, s.retried, s.duplicates
        );
    }
    Ok(())
}
