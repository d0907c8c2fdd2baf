//! Pipe throughput against `tokio::io::duplex`, in the same run.
//!
//! `cargo bench -p oscloud-core --bench pipe`. A writer task sends frames
//! to a reader task through 256 KiB (the pipe's capacity; `duplex(256 KiB)`
//! with `write_all` and `read` into a 64 KiB buffer). oscloud and duplex
//! run interleaved in rounds (A B, B A, ...; `OSCLOUD_BENCH_RUNS` rounds,
//! default 5); each round's oscloud rate is divided by the same round's
//! duplex rate, and the table gives the median ratio and its min–max.
//! Beside it: CPU time (user + system, `getrusage` of the process) per MiB
//! moved, and its ratio taken the same way. Once on tokio's default
//! multi-thread runtime (a worker per core) and once with one worker.
//!
//! Rows: frames of 64 KiB, 1 KiB and 64 B with one `send` each, and 64 B
//! frames with `send_many` in batches of 64 (4 KiB). `split(2)` (the
//! kernel's fan-out to two blocking branches, both read to the end) is
//! given for information, against the same round's pipe.
#![allow(clippy::print_stdout, missing_docs, unsafe_code)]

mod common;

use common::{Cost, rounds, spread, timed};

use std::future::Future;

use bytes::Bytes;
use oscloud_core::PipeConfig;
use oscloud_core::pipe::pipe;
use oscloud_core::plumbing::{Branch, split};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CAPACITY: usize = 256 * 1024;
/// Frames per `send_many` in the batched row.
const BATCH: usize = 64;

async fn ours(frame: usize, total: usize, batch: usize) -> Cost {
    let (w, mut r) = pipe(PipeConfig::with_capacity(CAPACITY));
    let chunk = Bytes::from(vec![7u8; frame]);
    timed(async move {
        let writer = tokio::spawn(async move {
            let frames = total / frame;
            if batch == 1 {
                for _ in 0..frames {
                    w.send(chunk.clone()).await.expect("reader alive");
                }
            } else {
                for _ in 0..frames / batch {
                    let many = vec![chunk.clone(); batch];
                    w.send_many(many).await.expect("reader alive");
                }
            }
        });
        let mut got = 0;
        while let Some(f) = r.recv().await {
            got += f.len();
        }
        writer.await.expect("writer");
        assert_eq!(got, total / frame * frame);
    })
    .await
}

async fn duplex(frame: usize, total: usize) -> Cost {
    let (mut a, mut b) = tokio::io::duplex(CAPACITY);
    let chunk = vec![7u8; frame];
    timed(async move {
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
    })
    .await
}

async fn split2(frame: usize, total: usize) -> Cost {
    let (w, r) = pipe(PipeConfig::with_capacity(CAPACITY));
    let (aw, mut ar) = pipe(PipeConfig::with_capacity(CAPACITY));
    let (bw, mut br) = pipe(PipeConfig::with_capacity(CAPACITY));
    let s = split(r, vec![Branch::block(aw), Branch::block(bw)]);
    let chunk = Bytes::from(vec![7u8; frame]);
    timed(async move {
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
    })
    .await
}

fn bench(runtime: &str, rt: &tokio::runtime::Runtime, rounds: usize) {
    let rows: [(usize, usize, usize); 4] = [
        (64 * 1024, 1024 << 20, 1),
        (1024, 128 << 20, 1),
        (64, 16 << 20, 1),
        (64, 16 << 20, BATCH),
    ];
    for (frame, total, batch) in rows {
        let (mut o, mut d, mut s) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..rounds {
            // Each run in a task on a worker, as a server's code would.
            let run = |f: std::pin::Pin<Box<dyn Future<Output = Cost> + Send>>| {
                rt.block_on(async move { tokio::spawn(f).await.expect("run") })
            };
            if round % 2 == 0 {
                o.push(run(Box::pin(ours(frame, total, batch))));
                d.push(run(Box::pin(duplex(frame, total))));
            } else {
                d.push(run(Box::pin(duplex(frame, total))));
                o.push(run(Box::pin(ours(frame, total, batch))));
            }
            if batch == 1 {
                s.push(run(Box::pin(split2(frame, total))));
            }
        }
        let mib = total as f64 / (1024.0 * 1024.0);
        let rate = |c: &Cost| mib / c.wall.as_secs_f64();
        let cpu = |c: &Cost| c.cpu.as_secs_f64() * 1e6 / mib;
        let med = |v: &[Cost], f: &dyn Fn(&Cost) -> f64| spread(v.iter().map(f).collect()).0;
        let (r, rmin, rmax) = spread(o.iter().zip(&d).map(|(o, d)| rate(o) / rate(d)).collect());
        let (c, cmin, cmax) = spread(o.iter().zip(&d).map(|(o, d)| cpu(o) / cpu(d)).collect());
        let split = if s.is_empty() {
            "-".to_owned()
        } else {
            format!("{:.0}", med(&s, &rate))
        };
        println!(
            "{:<9} {:<16} {:>5} MiB {:>8.0} {:>8.0} {:>6.2}x ({:.2}-{:.2}) {:>7.0} {:>7.0} {:>6.2}x ({:.2}-{:.2}) {:>8}",
            runtime,
            if batch == 1 {
                format!("{frame} B")
            } else {
                format!("{frame} B x{batch}")
            },
            total >> 20,
            med(&o, &rate),
            med(&d, &rate),
            r,
            rmin,
            rmax,
            med(&o, &cpu),
            med(&d, &cpu),
            c,
            cmin,
            cmax,
            split,
        );
    }
}

fn main() {
    let rounds = rounds();
    println!(
        "pipe against duplex, writer task -> reader task, 256 KiB; {rounds} interleaved rounds; \
         MiB/s and CPU us per MiB (medians)"
    );
    println!(
        "{:<9} {:<16} {:>9} {:>8} {:>8} {:>20} {:>7} {:>7} {:>20} {:>8}",
        "runtime",
        "frame",
        "total",
        "ours",
        "duplex",
        "ours/duplex",
        "CPU our",
        "CPU dup",
        "CPU ours/duplex",
        "split(2)"
    );
    let default = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    bench("default", &default, rounds);
    let one = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    bench("1 worker", &one, rounds);
}
