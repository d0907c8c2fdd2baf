//! One server, five placements: the same code in one process, across
//! processes over a Unix socket, across machines over TCP, a WebSocket or a
//! serial line.
//! Only the address changes.
//!
//! ```sh
//! # one process: server and caller on one kernel
//! cargo run --example node -- --serve upper --call upper "hello"
//!
//! # two processes over a Unix socket
//! cargo run --example node -- --listen unix:///tmp/oscloud-demo.sock --serve upper
//! cargo run --example node -- --connect unix:///tmp/oscloud-demo.sock --call upper "hello"
//!
//! # two machines (or processes) over TCP
//! cargo run --example node -- --listen tcp://0.0.0.0:7000 --serve upper
//! cargo run --example node -- --connect tcp://127.0.0.1:7000 --call upper "hello"
//!
//! # over a WebSocket (wss:// too, with cert= and key= on the listener)
//! cargo run --example node -- --listen ws://127.0.0.1:7780/oscloud --serve upper
//! cargo run --example node -- --connect ws://127.0.0.1:7780/oscloud --call upper "hello"
//!
//! # through a zenoh router (zenohd on 127.0.0.1:7447): reachable as
//! # "upper-node" in cloud "demo", dialled by that name
//! cargo run --example node -- --listen zenoh://127.0.0.1:7447/demo/upper-node --serve upper
//! cargo run --example node -- --connect zenoh://127.0.0.1:7447/demo/upper-node --call upper "hello"
//!
//! # two machines over a serial cable (either end may listen or connect)
//! cargo run --example node -- --listen "serial:///dev/ttyUSB0?baud=115200" --serve upper
//! cargo run --example node -- --connect "serial:///dev/ttyUSB0?baud=115200" --call upper "hello"
//! ```
//!
//! A node that serves and makes no call runs until Ctrl-C.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::sync::Arc;
use std::time::Duration;

use oscloud_actors::{Context, Server, ServerError, ServerRef, async_trait};
use oscloud_core::address::Address;
use oscloud_core::transport::Transports;
use oscloud_core::{Kernel, Node, RegistryEvent};
use oscloud_transport_serial::SerialTransport;
use oscloud_transport_tcp::TcpTransport;
use oscloud_transport_unix::UnixTransport;
use oscloud_transport_ws::WsTransport;
use oscloud_transport_zenoh::ZenohTransport;

/// The server: upper-cases text, and says which node answered.
struct Upper;

#[async_trait]
impl Server for Upper {
    type Request = String;
    type Reply = String;
    type State = String;

    async fn init(&self, ctx: &mut Context) -> Result<String, ServerError> {
        Ok(ctx.kernel().node().short())
    }

    async fn handle_call(
        &self,
        _ctx: &mut Context,
        node: &mut String,
        text: String,
    ) -> Result<String, ServerError> {
        Ok(format!("{} (served by node {node})", text.to_uppercase()))
    }
}

/// The caller: the same whether `name` is here or on another node.
async fn call(kernel: &Kernel, name: &str, text: &str) -> Result<String, oscloud_actors::Error> {
    let upper = ServerRef::new(kernel, name).typed::<String, String>();
    upper.call(&text.to_owned(), Duration::from_secs(5)).await
}

/// Wait until `name` is in the registry (a linked node announces it).
async fn wait_for(kernel: &Kernel, name: &str) -> Result<(), String> {
    let mut watch = kernel.registry().watch();
    tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(ev) = watch.next().await {
            if matches!(&ev, RegistryEvent::Added(e) if e.name() == name) {
                return;
            }
        }
    })
    .await
    .map_err(|_| format!("no server named {name:?} appeared within 10 s"))
}

/// Link to `addr`, waiting up to 10 s for the peer to come up.
async fn connect(node: &Node, addr: &Address) -> Result<oscloud_core::NodeId, oscloud_core::Error> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match node.connect(addr).await {
            Err(
                oscloud_core::Error::ConnectionRefused { .. } | oscloud_core::Error::BadPath { .. },
            ) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => return other,
        }
    }
}

#[derive(Default)]
struct Args {
    listen: Vec<Address>,
    connect: Vec<Address>,
    serve: Option<String>,
    call: Option<(String, String)>,
}

fn parse() -> Result<Args, String> {
    let mut a = Args::default();
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |what: &str| it.next().ok_or(format!("{flag} needs {what}"));
        match flag.as_str() {
            "--listen" => a
                .listen
                .push(value("an address")?.parse().map_err(|e| format!("{e}"))?),
            "--connect" => a
                .connect
                .push(value("an address")?.parse().map_err(|e| format!("{e}"))?),
            "--serve" => a.serve = Some(value("a server name")?),
            "--call" => {
                let name = value("a server name and a text")?;
                a.call = Some((name, value("a text")?));
            }
            "-h" | "--help" => {
                return Err("usage: node [--listen URI]... [--connect URI]... \
                            [--serve NAME] [--call NAME TEXT]"
                    .into());
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
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
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };

    // Location is configuration: the kernel, the server and the caller are
    // the same in every mode; only these transports and addresses differ.
    let kernel = Kernel::new();
    let transports = Transports::new()
        .with(Arc::new(TcpTransport))
        .with(Arc::new(WsTransport::ws()))
        .with(Arc::new(WsTransport::wss()))
        .with(Arc::new(ZenohTransport::new()))
        .with(Arc::new(UnixTransport))
        .with(Arc::new(SerialTransport));
    let node = Node::new(kernel.clone(), transports);
    println!("node {} up", kernel.node().short());

    let _server = match &args.serve {
        Some(name) => {
            let handle = oscloud_actors::start(&kernel, name.as_str(), Upper).await?;
            println!("serving {name:?}");
            Some(handle)
        }
        None => None,
    };
    for addr in &args.listen {
        println!("listening on {}", node.listen(addr).await?);
    }
    for addr in &args.connect {
        let peer = connect(&node, addr).await?;
        println!("linked to node {} over {addr}", peer.short());
    }

    match &args.call {
        Some((name, text)) => {
            wait_for(&kernel, name).await?;
            let where_ = kernel.registry().lookup(name)?.node();
            let place = if where_ == kernel.node() {
                "this node"
            } else {
                "a linked node"
            };
            println!("found {name:?} on {place} ({})", where_.short());
            println!("reply: {}", call(&kernel, name, text).await?);
        }
        None => {
            println!("running; Ctrl-C stops");
            tokio::signal::ctrl_c().await?;
        }
    }
    node.shutdown();
    Ok(())
}
