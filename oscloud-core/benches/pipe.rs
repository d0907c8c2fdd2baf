//! Pipe throughput against `tokio::io::duplex`, in the same run.
//!
//! `cargo bench -p oscloud-core --bench pipe`. Prints MiB/s (median of 5
//! runs) and the ratio ours / duplex. Both move the same bytes from a
//! writer task to a reader task through a 256 KiB buffer.
#![allow(clippy::print_stdout, missing_docs)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use oscloud_core::PipeConfig;
use oscloud_core::pipe::pipe;
use oscloud_core::plumbing::{Branch, split};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CAPACITY: usize = 256 * 1024;
const RUNS: usize = 5;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

async fn ours(frame: usize, total: usize) -> Duration {
    let (w, mut r) = pipe(PipeConfig::with_capacity(CAPACITY));
    let chunk = Bytes::from(vec![7u8; frame]);
    let start = Instant::now();
    let writer = tokio::spawn(async move {
        for _ in 0..total / frame {
            w.send(chunk.clone()).await.expect("reader alive");
        }
    });
    let mut got = 0;
    while let Some(f) = r.recv().await {
        got += f.len();
    }
    writer.await.expect("writer");
    assert_eq!(got, total / frame * frame);
    start.elapsed()
}

async fn duplex(frame: usize, total: usize) -> Duration {
    let (mut a, mut b) = tokio::io::duplex(CAPACITY);
    let chunk = vec![7u8; frame];
    let start = Instant::now();
    let writer = tokio::spawn(async move {
        for _ in 0..total / frame {
            a.write_all(&chunk).await.expect("reader alive");
        }
    });
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = 0;
    loop {
        let n = b.read(&mut buf).await.expect("read");
        if n == 0 {
            break;
        }
        got += n;
    }
    writer.await.expect("writer");
    assert_eq!(got, total / frame * frame);
    start.elapsed()
}

async fn split2(frame: usize, total: usize) -> Duration {
    let (w, r) = pipe(PipeConfig::with_capacity(CAPACITY));
    let (aw, mut ar) = pipe(PipeConfig::with_capacity(CAPACITY));
    let (bw, mut br) = pipe(PipeConfig::with_capacity(CAPACITY));
    let s = split(r, vec![Branch::block(aw), Branch::block(bw)]);
    let chunk = Bytes::from(vec![7u8; frame]);
    let start = Instant::now();
    let writer = tokio::spawn(async move {
        for _ in 0..total / frame {
            w.send(chunk.clone()).await.expect("reader alive");
        }
    });
    let other = tokio::spawn(async move { while br.recv().await.is_some() {} });
    while ar.recv().await.is_some() {}
    other.await.expect("branch b");
    writer.await.expect("writer");
    s.finished().await.expect("split");
    start.elapsed()
}

fn mib_s(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / (1024.0 * 1024.0) / d.as_secs_f64()
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    println!("pipe throughput, writer task -> reader task, capacity 256 KiB, median of {RUNS}");
    println!(
        "{:<10} {:>9} {:>14} {:>14} {:>13} {:>16}",
        "frame", "total", "oscloud MiB/s", "duplex MiB/s", "ours/duplex", "split(2) MiB/s"
    );
    for (frame, total) in [(64 * 1024, 1024 << 20), (1024, 128 << 20), (64, 16 << 20)] {
        let (mut o, mut d, mut s) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..RUNS {
            o.push(rt.block_on(ours(frame, total)));
            d.push(rt.block_on(duplex(frame, total)));
            s.push(rt.block_on(split2(frame, total)));
        }
        let (o, d, s) = (
            mib_s(total, median(o)),
            mib_s(total, median(d)),
            mib_s(total, median(s)),
        );
        println!(
            "{:<10} {:>6} MiB {:>14.0} {:>14.0} {:>12.2}x {:>16.0}",
            format!("{frame} B"),
            total >> 20,
            o,
            d,
            o / d,
            s
        );
    }
}
