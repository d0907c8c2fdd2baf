use std::time::Duration;

use bytes::Bytes;
use proptest::prelude::*;

use super::*;
use crate::pipe::{PipeConfig, pipe};

fn frame(source: u8, seq: u32, len: usize) -> Bytes {
    let mut v = vec![source];
    v.extend_from_slice(&seq.to_be_bytes());
    v.resize(len.max(5), 0xAB);
    Bytes::from(v)
}

/// Write 10-byte frames until a write does not complete within 50 ms (the
/// pipe is full and nothing drains it); returns the bytes accepted, failing
/// if that exceeds `limit`.
async fn fill_until_blocked(w: &PipeWriter, limit: usize) -> usize {
    let mut accepted = 0usize;
    while tokio::time::timeout(
        Duration::from_millis(50),
        w.send(Bytes::from_static(&[0; 10])),
    )
    .await
    .is_ok_and(|r| r.is_ok())
    {
        accepted += 10;
        assert!(
            accepted <= limit,
            "accepted {accepted} bytes, more than {limit}"
        );
    }
    accepted
}

fn seq_of(f: &Bytes) -> (u8, u32) {
    (f[0], u32::from_be_bytes([f[1], f[2], f[3], f[4]]))
}

#[tokio::test]
async fn connect_moves_in_order_and_propagates_eof() {
    let (w, r) = pipe(PipeConfig::default());
    let (w2, mut r2) = pipe(PipeConfig::default());
    let c = connect(r, w2);
    for i in 0..100 {
        w.send(frame(0, i, 10)).await.unwrap();
    }
    drop(w);
    for i in 0..100 {
        assert_eq!(seq_of(&r2.recv().await.unwrap()), (0, i));
    }
    assert_eq!(r2.recv().await, None);
    assert_eq!(c.finished().await.unwrap(), 100);
}

#[tokio::test]
async fn connect_propagates_reader_gone_upstream() {
    let (w, r) = pipe(PipeConfig::default());
    let (w2, r2) = pipe(PipeConfig::default());
    let c = connect(r, w2);
    drop(r2);
    w.send(Bytes::from_static(b"x")).await.unwrap();
    assert_eq!(c.finished().await, Err(Error::PipeClosed));
    assert_eq!(
        w.send(Bytes::from_static(b"y")).await,
        Err(Error::PipeClosed)
    );
}

#[tokio::test]
async fn connect_ends_at_a_frame_too_long_for_downstream() {
    let (w, r) = pipe(PipeConfig::default());
    let (w2, mut r2) = pipe(PipeConfig::default());
    r2.limit_frames(3);
    let c = connect(r, w2);
    w.send(Bytes::from_static(b"abc")).await.unwrap();
    w.send(Bytes::from_static(b"abcd")).await.unwrap();
    let _ = w.send(Bytes::from_static(b"x")).await;
    assert_eq!(
        c.finished().await,
        Err(Error::FrameTooLarge { len: 4, max: 3 })
    );
    // Downstream: what came before, then the end, never a frame after.
    assert_eq!(r2.recv().await.unwrap(), Bytes::from_static(b"abc"));
    assert_eq!(r2.recv().await, None);
    assert_eq!(
        w.send(Bytes::from_static(b"y")).await,
        Err(Error::PipeClosed)
    );
}

#[tokio::test]
async fn connect_back_pressure_bounds_memory() {
    let (w, r) = pipe(PipeConfig::with_capacity(100));
    let (w2, r2) = pipe(PipeConfig::with_capacity(100));
    let _c = connect(r, w2);
    // With the downstream reader stalled, at most both capacities plus the
    // one frame in the connection's hands can be accepted.
    let accepted = fill_until_blocked(&w, 210).await;
    assert!(accepted >= 200, "accepted only {accepted}");
    assert!(r2.buffered() <= 100);
}

#[tokio::test]
async fn connect_duplex_bridges_both_ways() {
    let (mut a, a_peer) = crate::pipe::duplex(PipeConfig::default());
    let (mut b, b_peer) = crate::pipe::duplex(PipeConfig::default());
    let _c = connect_duplex(a_peer, b_peer);
    a.send(Bytes::from_static(b"to b")).await.unwrap();
    assert_eq!(b.recv().await.unwrap(), Bytes::from_static(b"to b"));
    b.send(Bytes::from_static(b"to a")).await.unwrap();
    assert_eq!(a.recv().await.unwrap(), Bytes::from_static(b"to a"));
}

#[tokio::test]
async fn split_block_stalls_source_when_a_branch_stalls() {
    let (w, r) = pipe(PipeConfig::with_capacity(50));
    let (fast_w, mut fast_r) = pipe(PipeConfig::with_capacity(1000));
    let (slow_w, slow_r) = pipe(PipeConfig::with_capacity(50));
    let s = split(r, vec![Branch::block(fast_w), Branch::block(slow_w)]);
    let accepted = fill_until_blocked(&w, 120).await;
    assert_eq!(slow_r.buffered(), 50);
    drop(slow_r);
    // With the slow branch gone, the rest flows.
    drop(w);
    let mut n = 0;
    while fast_r.recv().await.is_some() {
        n += 1;
    }
    assert_eq!(n * 10, accepted);
    let report = s.finished().await.unwrap();
    assert_eq!(report.frames as usize * 10, accepted);
}

#[tokio::test]
async fn split_drop_oldest_counts_exactly() {
    let (w, r) = pipe(PipeConfig::default());
    let (fast_w, mut fast_r) = pipe(PipeConfig::default());
    let (slow_w, mut slow_r) = pipe(PipeConfig::with_capacity(10));
    let s = split(
        r,
        vec![Branch::block(fast_w), Branch::drop_oldest(slow_w, 4)],
    );
    for i in 0..200 {
        w.send(frame(0, i, 10)).await.unwrap();
        assert_eq!(seq_of(&fast_r.recv().await.unwrap()), (0, i));
    }
    drop(w);
    assert_eq!(fast_r.recv().await, None);
    let mut got = Vec::new();
    while let Some(f) = slow_r.recv().await {
        got.push(seq_of(&f).1);
    }
    let report = s.finished().await.unwrap();
    assert_eq!(report.frames, 200);
    assert_eq!(report.dropped[0], 0);
    assert_eq!(got.len() as u64 + report.dropped[1], 200);
    assert!(
        got.windows(2).all(|p| p[0] < p[1]),
        "order kept, no duplicates"
    );
    assert_eq!(got.last(), Some(&199), "the newest frames are kept");
    assert!(report.dropped[1] > 0, "a stalled lossy branch must drop");
}

#[tokio::test]
async fn split_removes_a_branch_whose_reader_left() {
    let (w, r) = pipe(PipeConfig::default());
    let (a_w, mut a_r) = pipe(PipeConfig::default());
    let (b_w, b_r) = pipe(PipeConfig::default());
    let s = split(r, vec![Branch::block(a_w), Branch::block(b_w)]);
    drop(b_r);
    for i in 0..10 {
        w.send(frame(0, i, 8)).await.unwrap();
    }
    drop(w);
    for i in 0..10 {
        assert_eq!(seq_of(&a_r.recv().await.unwrap()), (0, i));
    }
    assert_eq!(a_r.recv().await, None);
    let report = s.finished().await.unwrap();
    assert_eq!(report.delivered, vec![10, 0]);
}

#[tokio::test]
async fn merge_keeps_per_source_order_and_ends_after_all() {
    let (dst_w, mut dst_r) = pipe(PipeConfig::default());
    let mut writers = Vec::new();
    let mut readers = Vec::new();
    for _ in 0..3 {
        let (w, r) = pipe(PipeConfig::with_capacity(64));
        writers.push(w);
        readers.push(r);
    }
    let m = merge(readers, dst_w);
    let producers: Vec<_> = writers
        .into_iter()
        .enumerate()
        .map(|(s, w)| {
            tokio::spawn(async move {
                for i in 0..100 {
                    w.send(frame(s as u8, i, 16)).await.unwrap();
                }
            })
        })
        .collect();
    let mut next = [0u32; 3];
    while let Some(f) = dst_r.recv().await {
        let (s, i) = seq_of(&f);
        assert_eq!(next[s as usize], i);
        next[s as usize] += 1;
    }
    assert_eq!(next, [100; 3]);
    for p in producers {
        p.await.unwrap();
    }
    assert_eq!(m.finished().await.unwrap(), vec![100; 3]);
}

/// How a reader paces itself in the property tests: yields between reads.
fn run<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
        .block_on(f)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn split_invariants(
        lens in prop::collection::vec(0usize..300, 1..120),
        policies in prop::collection::vec(prop::option::of(1usize..8), 1..4),
        caps in prop::collection::vec(1usize..600, 4),
        pace in prop::collection::vec(0u8..4, 4),
    ) {
        run(async move {
            let (w, r) = pipe(PipeConfig::with_capacity(caps[0]));
            let mut branches = Vec::new();
            let mut readers = Vec::new();
            for (i, p) in policies.iter().enumerate() {
                let (bw, br) = pipe(PipeConfig::with_capacity(caps[(i + 1) % 4]));
                branches.push(match p {
                    None => Branch::block(bw),
                    Some(q) => Branch::drop_oldest(bw, *q),
                });
                readers.push(br);
            }
            let s = split(r, branches);
            let n = lens.len();
            let consumers: Vec<_> = readers.into_iter().enumerate().map(|(i, mut br)| {
                let yields = pace[i % 4];
                tokio::spawn(async move {
                    let mut got = Vec::new();
                    while let Some(f) = br.recv().await {
                        got.push(seq_of(&f).1);
                        for _ in 0..yields { tokio::task::yield_now().await; }
                    }
                    got
                })
            }).collect();
            for (i, len) in lens.iter().enumerate() {
                w.send(frame(0, i as u32, *len)).await.unwrap();
            }
            drop(w);
            let mut got_all = Vec::new();
            for c in consumers { got_all.push(c.await.unwrap()); }
            let report = s.finished().await.unwrap();
            prop_assert_eq!(report.frames as usize, n);
            for (i, got) in got_all.iter().enumerate() {
                prop_assert!(got.windows(2).all(|p| p[0] < p[1]), "order/duplicates on branch {}", i);
                prop_assert_eq!(got.len() as u64 + report.dropped[i], n as u64);
                prop_assert_eq!(got.len() as u64, report.delivered[i]);
                if policies[i].is_none() {
                    prop_assert_eq!(report.dropped[i], 0);
                }
            }
            Ok(())
        })?;
    }

    #[test]
    fn merge_invariants(
        counts in prop::collection::vec(0u32..80, 1..5),
        cap in 1usize..500,
        len in 0usize..200,
    ) {
        run(async move {
            let (dst_w, mut dst_r) = pipe(PipeConfig::with_capacity(cap));
            let mut writers = Vec::new();
            let mut readers = Vec::new();
            for _ in &counts {
                let (w, r) = pipe(PipeConfig::with_capacity(cap));
                writers.push(w);
                readers.push(r);
            }
            let m = merge(readers, dst_w);
            for (s, (w, count)) in writers.into_iter().zip(counts.clone()).enumerate() {
                tokio::spawn(async move {
                    for i in 0..count { w.send(frame(s as u8, i, len)).await.unwrap(); }
                });
            }
            let mut next = vec![0u32; counts.len()];
            while let Some(f) = dst_r.recv().await {
                let (s, i) = seq_of(&f);
                prop_assert_eq!(next[s as usize], i);
                next[s as usize] += 1;
            }
            prop_assert_eq!(&next, &counts);
            prop_assert_eq!(m.finished().await.unwrap(), counts.iter().map(|c| u64::from(*c)).collect::<Vec<_>>());
            Ok(())
        })?;
    }
}
