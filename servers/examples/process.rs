//! Run any stdio program as a supervised oscloud server on a node:
//!
//! ```sh
//! cargo run -p oscloud-servers --example process -- \
//!     --listen unix:///tmp/checksum.sock --name checksum -- stdbuf -oL ./checksum
//! cargo run --example node -- --connect unix:///tmp/checksum.sock --call checksum hello
//! ```
//!
//! Each call is one line on the program's stdin and one line back from its
//! stdout; if the program dies its supervisor starts it again. Runs until
//! Ctrl-C (SIGINT) or SIGTERM.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::sync::Arc;
use std::time::Duration;

use oscloud_actors::{Supervisor, SupervisorSpec};
use oscloud_core::transport::Transports;
use oscloud_core::{Kernel, Node};
use oscloud_servers::process::ProcessSpec;
use oscloud_transport_tcp::TcpTransport;
use oscloud_transport_unix::UnixTransport;
use tokio::signal::unix::{SignalKind, signal};

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut listen = Vec::new();
    let mut name = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--listen" => listen.push(args.next().ok_or("--listen needs an address")?),
            "--name" => name = Some(args.next().ok_or("--name needs a name")?),
            "--" => break,
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    let program: Vec<String> = args.collect();
    let (Some(name), Some((prog, prog_args))) = (name, program.split_first()) else {
        return Err("usage: process [--listen URI]... --name NAME -- PROGRAM [ARG]...".into());
    };
    let kernel = Kernel::new();
    let transports = Transports::new()
        .with(Arc::new(TcpTransport))
        .with(Arc::new(UnixTransport));
    let node = Node::new(kernel.clone(), transports);
    let spec = ProcessSpec::new(prog).args(prog_args);
    let tree = Supervisor::start(
        &kernel,
        SupervisorSpec::new(format!("{name}-sup"))
            .intensity(5, Duration::from_secs(10))
            .child(spec.child_spec(name.as_str())),
    )
    .await?;
    for addr in &listen {
        println!("serving {name:?} on {}", node.listen(&addr.parse()?).await?);
    }
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    tree.stop().await;
    node.shutdown();
    Ok(())
}
