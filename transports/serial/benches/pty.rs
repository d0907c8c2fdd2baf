//! Serial-link benchmark over pseudo-terminal pairs, in one run:
//!
//! 1. raw: bytes written to a pty pair in 1 KiB writes and read at the
//!    other end (the ceiling);
//! 2. goodput: two nodes linked over another pty pair (COBS + CRC framing,
//!    acks, credit), a pipe carrying the same bytes in 1 KiB frames;
//! 3. bytes on the wire per call with an 8-byte request and reply.
//!
//! Run: `cargo bench -p oscloud-transport-serial --bench pty`
//! (`OSCLOUD_BENCH_MIB` sets the volume, default 64;
//! `OSCLOUD_BENCH_FRAME` and `OSCLOUD_BENCH_WINDOW` override the node's
//! `lossy_max_frame` and `lossy_send_window`; `OSCLOUD_BENCH_ONLY=node` or
//! `raw` runs one side only, to profile it).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use oscloud_core::address::Address;
use oscloud_core::transport::{Link, Listener, Transport, Transports};
use oscloud_core::{Capabilities, Endpoint, Error, Kernel, Node, NodeConfig, PipeEnd};
use oscloud_transport_serial::{SerialStream, SerialTransport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Hands out two prepared links: one to `connect`, one to `listen`.
#[derive(Debug)]
struct Prepared {
    dial: Mutex<Option<Link>>,
    accept: Mutex<Option<Link>>,
}

struct OneLink(Option<Link>);

#[async_trait]
impl Listener for OneLink {
    async fn accept(&mut self) -> Result<Link, Error> {
        match self.0.take() {
            Some(l) => Ok(l),
            None => std::future::pending().await,
        }
    }
    fn local_address(&self) -> Address {
        "pair://a".parse().unwrap()
    }
}

#[async_trait]
impl Transport for Prepared {
    fn scheme(&self) -> &'static str {
        "pair"
    }
    async fn connect(&self, addr: &Address) -> Result<Link, Error> {
        self.dial
            .lock()
            .unwrap()
            .take()
            .ok_or_else(|| Error::ConnectionRefused {
                address: addr.to_string(),
            })
    }
    async fn listen(&self, _addr: &Address) -> Result<Box<dyn Listener>, Error> {
        Ok(Box::new(OneLink(self.accept.lock().unwrap().take())))
    }
}

/// Echoes calls; port `sink` counts pipe bytes and answers the count.
#[derive(Debug)]
struct Server;

#[async_trait]
impl Endpoint for Server {
    fn try_cast(&self, _msg: Bytes) -> Result<(), Error> {
        Ok(())
    }
    async fn call(&self, msg: Bytes) -> Result<Bytes, Error> {
        Ok(msg)
    }
    async fn open_pipe(&self, _port: &str, end: PipeEnd) -> Result<(), Error> {
        tokio::spawn(async move {
            let (mut r, w) = end.split();
            let mut n = 0u64;
            while let Some(f) = r.recv().await {
                n += f.len() as u64;
            }
            let _ = w.send(Bytes::from(n.to_be_bytes().to_vec())).await;
        });
        Ok(())
    }
}

/// CPU time this process used so far (user + system, all threads), from
/// `/proc/self/stat`: a measure that the load of other processes on the
/// machine disturbs less than wall-clock time.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(") ").next().unwrap_or("");
    let f: Vec<u64> = after
        .split(' ')
        .skip(11)
        .take(2)
        .filter_map(|x| x.parse().ok())
        .collect();
    // Clock ticks of 10 ms (USER_HZ 100 on Linux).
    Duration::from_millis(f.iter().sum::<u64>() * 10)
}

async fn raw(total: usize) -> Duration {
    let (mut m, mut s) = SerialStream::pair().expect("a pty pair");
    let t = Instant::now();
    let writer = tokio::spawn(async move {
        let chunk = vec![0x55u8; 1024];
        for _ in 0..total / 1024 {
            m.write_all(&chunk).await.unwrap();
        }
        m
    });
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = 0;
    while got < total {
        got += s.read(&mut buf).await.unwrap();
    }
    let took = t.elapsed();
    drop(writer.await.unwrap());
    took
}

async fn nodes(
    config: &NodeConfig,
) -> (Node, Node, oscloud_core::Entry, oscloud_core::Registration) {
    let (m, s) = SerialStream::pair().expect("a pty pair");
    let prepared = Arc::new(Prepared {
        dial: Mutex::new(Some(SerialTransport::link_from(
            m,
            "pty master",
            "pty slave",
        ))),
        accept: Mutex::new(Some(SerialTransport::link_from(
            s,
            "pty slave",
            "pty master",
        ))),
    });
    let transports = Transports::new().with(prepared);
    let a = Node::with_config(Kernel::new(), transports.clone(), config.clone());
    let b = Node::with_config(Kernel::new(), transports, config.clone());
    let reg = a
        .kernel()
        .registry()
        .register("echo", Capabilities::new(), Arc::new(Server))
        .unwrap();
    let at = a.listen(&"pair://a".parse().unwrap()).await.unwrap();
    b.connect(&at).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let echo = loop {
        if let Ok(e) = b.kernel().registry().lookup("echo") {
            break e;
        }
        assert!(Instant::now() < deadline, "echo not announced");
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    (a, b, echo, reg)
}

/// Pipe goodput and the sender's wire bytes per payload byte.
async fn goodput(config: &NodeConfig, total: usize) -> (Duration, f64) {
    let (a, b, echo, _reg) = nodes(config).await;
    let (mine, theirs) = b.kernel().duplex();
    echo.endpoint().open_pipe("sink", theirs).await.unwrap();
    let (mut reader, writer) = mine.split();
    let before = b.links()[0].stats;
    let t = Instant::now();
    let chunk = Bytes::from(vec![0x55u8; 1024]);
    for _ in 0..total / 1024 {
        writer.send(chunk.clone()).await.unwrap();
    }
    drop(writer);
    let answer = reader.recv().await.expect("the count");
    let took = t.elapsed();
    assert_eq!(answer[..], (total as u64).to_be_bytes());
    let after = b.links()[0].stats;
    let recv = a.links()[0].stats;
    if std::env::var_os("OSCLOUD_BENCH_VERBOSE").is_some() {
        println!("  sender {after:?}\n  receiver {recv:?}");
    }
    let wire = (after.bytes_sent - before.bytes_sent) as f64;
    let payload = (after.payload_bytes_sent - before.payload_bytes_sent) as f64;
    a.shutdown();
    b.shutdown();
    (took, wire / payload)
}

/// Wire bytes (both directions) per call of 8 bytes each way.
async fn call_bytes(config: &NodeConfig, calls: u64) -> (f64, f64, Duration) {
    let (a, b, echo, _reg) = nodes(config).await;
    // Let the registry sync settle, then count.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (a0, b0) = (a.links()[0].stats, b.links()[0].stats);
    let t = Instant::now();
    for i in 0..calls {
        let r = echo
            .endpoint()
            .call(Bytes::from(i.to_be_bytes().to_vec()))
            .await;
        assert_eq!(r.unwrap().len(), 8);
    }
    let took = t.elapsed();
    // The last reply's ack goes out after the ack delay.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (a1, b1) = (a.links()[0].stats, b.links()[0].stats);
    let request = (b1.bytes_sent - b0.bytes_sent) as f64 / calls as f64;
    let reply = (a1.bytes_sent - a0.bytes_sent) as f64 / calls as f64;
    a.shutdown();
    b.shutdown();
    (request, reply, took / calls as u32)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mib: usize = std::env::var("OSCLOUD_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let total = mib * 1024 * 1024;
    let mut config = NodeConfig::default();
    let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u64>().ok());
    if let Some(f) = env("OSCLOUD_BENCH_FRAME") {
        config.lossy_max_frame = f as usize;
    }
    if let Some(w) = env("OSCLOUD_BENCH_WINDOW") {
        config.lossy_send_window = w as u32;
    }
    rt.block_on(async {
        println!(
            "serial link over a pty pair: {mib} MiB in 1 KiB writes; lossy_max_frame {}, \
             lossy_send_window {}",
            config.lossy_max_frame, config.lossy_send_window
        );
        // OSCLOUD_BENCH_ONLY=node (or raw) runs one side only, to profile it.
        let only = std::env::var("OSCLOUD_BENCH_ONLY").unwrap_or_default();
        for round in 1..=2 {
            let c0 = cpu_time();
            let r = if only == "node" {
                Duration::from_secs(1)
            } else {
                raw(total).await
            };
            let c1 = cpu_time();
            let (g, ratio) = if only == "raw" {
                (Duration::from_secs(1), 1.0)
            } else {
                goodput(&config, total).await
            };
            let c2 = cpu_time();
            let per_mib = |d: Duration| d.as_secs_f64() * 1000.0 / mib as f64;
            println!(
                "round {round}: CPU per MiB (this process, user + system): raw {:.1} ms, \
                 node pipe {:.1} ms",
                per_mib(c1 - c0),
                per_mib(c2 - c1)
            );
            let raw_rate = total as f64 / r.as_secs_f64() / 1048576.0;
            let rate = total as f64 / g.as_secs_f64() / 1048576.0;
            println!(
                "round {round}: raw {raw_rate:.1} MiB/s, node pipe goodput {rate:.1} MiB/s \
                 ({:.1}% of raw); wire bytes per payload byte {ratio:.4} \
                 (framing + headers {:.2}%)",
                100.0 * rate / raw_rate,
                100.0 * (ratio - 1.0)
            );
        }
        let (req, rep, each) = call_bytes(&config, 1000).await;
        println!(
            "8-byte call to \"echo\": {req:.1} wire bytes caller→server, {rep:.1} server→caller \
             ({:.1} total, acks included); {each:?} per call",
            req + rep
        );
    });
}
