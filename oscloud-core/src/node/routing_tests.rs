//! Multi-hop routing, in one process over `mem://`: a chain and a ring.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::tests::{added, node, register, until};
use super::*;
use crate::transport::MemTransport;
use crate::{Capabilities, Endpoint, ExitReason, PipeEnd, RegistryEvent};

/// Poll `ok` until it holds, for at most 5 s.
async fn eventually(what: &str, ok: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !ok() {
        assert!(Instant::now() < deadline, "not within 5 s: {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// The id of `node`'s link to `peer`.
/// The reason `name` leaves the registry `watch` watches (within 5 s;
/// else the test fails with `what`).
async fn removal(watch: &mut crate::registry::Watch, name: &str, what: &str) -> ExitReason {
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Some(RegistryEvent::Removed { entry, reason }) = watch.next().await
                && entry.name() == name
            {
                return reason;
            }
        }
    })
    .await
    .expect(what)
}

fn link_to(node: &Node, peer: &Node) -> u64 {
    node.links()
        .into_iter()
        .find(|l| l.peer == Some(peer.kernel().node()) && l.connected)
        .map(|l| l.id)
        .expect("no link to that peer")
}

/// A, B and C, with A and C linked to B only.
async fn chain() -> (MemTransport, Node, Node, Node, Address) {
    chain_with(None).await
}

/// A chain whose pipes (local buffers and link windows) hold `window`
/// bytes, when set.
async fn chain_with(window: Option<u32>) -> (MemTransport, Node, Node, Node, Address) {
    let mem = MemTransport::new();
    let mk = || match window {
        None => node(&mem),
        Some(w) => {
            let mut t = Transports::new();
            t.add(Arc::new(mem.clone()));
            let kernel =
                Kernel::new().with_pipe_config(crate::PipeConfig::with_capacity(w as usize));
            let mut cfg = super::tests::config();
            cfg.pipe_window = w;
            Node::with_config(kernel, t, cfg)
        }
    };
    let (a, b, c) = (mk(), mk(), mk());
    let at = b.listen(&"mem://chain-b".parse().unwrap()).await.unwrap();
    a.connect(&at).await.unwrap();
    c.connect(&at).await.unwrap();
    (mem, a, b, c, at)
}

#[tokio::test]
async fn chain_lookup_call_and_pipe_through_the_middle() {
    // 64 KiB pipes and windows: ten of them between the writer and the
    // reader (A, B, C's buffers and the four link directions).
    const WINDOW: u32 = 64 * 1024;
    let (_mem, a, b, c, _) = chain_with(Some(WINDOW)).await;
    let (_r, echo) = register(&c, "far");
    let (_ra, _) = register(&a, "near");
    let ev = until(&a, added("far")).await;
    let far = ev.entry().clone();
    assert_eq!(far.node(), c.kernel().node());
    // And the other way: C sees A's server through B.
    until(&c, added("near")).await;
    let routes = a.routes();
    assert_eq!(routes.len(), 1, "{routes:?}");
    let r = routes.iter().find(|r| r.name == "far").unwrap();
    assert_eq!(r.path, vec![c.kernel().node(), b.kernel().node()]);
    assert_eq!(r.cost, 2);
    assert!(r.best);

    // Calls and casts.
    let reply = far
        .endpoint()
        .call(Bytes::from_static(b"hi"))
        .await
        .unwrap();
    assert_eq!(&reply[..], b"hi");
    far.endpoint().cast(Bytes::from_static(b"c")).await.unwrap();
    eventually("the cast arrives", || {
        echo.casts.load(Ordering::SeqCst) == 1
    })
    .await;
    let err = far
        .endpoint()
        .call(Bytes::from_static(b"fail"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Decode(_)), "{err:?}");

    // A pipe to C's echo port, 4 MiB, read slowly: what the writer gets
    // ahead of the reader stays bounded by the windows on the way.
    let (mine, theirs) = a.kernel().duplex();
    far.endpoint().open_pipe("echo", theirs).await.unwrap();
    let (mut rx, tx) = mine.split();
    const TOTAL: usize = 4 * 1024 * 1024;
    const CHUNK: usize = 16 * 1024;
    let written = Arc::new(AtomicU64::new(0));
    let writer = {
        let written = written.clone();
        tokio::spawn(async move {
            let mut sent = 0usize;
            while sent < TOTAL {
                let chunk: Vec<u8> = (sent..sent + CHUNK).map(|i| (i % 251) as u8).collect();
                tx.send(Bytes::from(chunk)).await.unwrap();
                sent += CHUNK;
                written.store(sent as u64, Ordering::SeqCst);
            }
        })
    };
    let started = Instant::now();
    let mut got = 0usize;
    let mut ahead = 0u64;
    while got < TOTAL {
        let f = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("pipe stalled")
            .expect("pipe ended early");
        for (k, byte) in f.iter().enumerate() {
            assert_eq!(*byte, ((got + k) % 251) as u8, "byte {} corrupt", got + k);
        }
        got += f.len();
        ahead = ahead.max(written.load(Ordering::SeqCst).saturating_sub(got as u64));
        // A slow reader: a pause every 256 KiB.
        if got % (256 * 1024) < f.len() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    writer.await.unwrap();
    let elapsed = started.elapsed();
    eprintln!(
        "4 MiB A→B→C→B→A echo with a slow reader: {elapsed:?}, writer at most {ahead} bytes ahead"
    );
    assert!(
        ahead < 16 * u64::from(WINDOW),
        "the writer got {ahead} bytes ahead of a slow reader: no back-pressure"
    );
}

#[tokio::test]
async fn chain_cut_withdraws_and_fails_calls_then_heals() {
    let (_mem, a, b, c, at) = chain().await;
    let (_r, _) = register(&c, "far");
    let far = until(&a, added("far")).await.entry().clone();
    // A call that C never answers, in flight through B.
    let hanging = {
        let far = far.clone();
        tokio::spawn(async move { far.endpoint().call(Bytes::from_static(b"hang")).await })
    };
    eventually("the call reached C", || {
        c.links()
            .iter()
            .any(|l| l.stats.payload_bytes_received >= 4)
    })
    .await;
    let mut watch = a.kernel().registry().watch();
    assert!(c.close_link(link_to(&c, &b)));
    let reason = removal(&mut watch, "far", "A did not see C's server withdrawn").await;
    assert!(matches!(reason, ExitReason::LinkDown(_)), "{reason:?}");
    let err = hanging.await.unwrap().unwrap_err();
    assert!(
        matches!(&err, Error::ServerStopped { reason, .. } if reason.contains("link down")),
        "{err:?}"
    );
    assert!(a.kernel().registry().lookup("far").is_err());
    // The old entry finds no server any more.
    let err = far
        .endpoint()
        .call(Bytes::from_static(b"x"))
        .await
        .unwrap_err();
    assert_eq!(err, Error::NotFound("far".into()));

    // Heal: C links to B again.
    c.connect(&at).await.unwrap();
    let far = until(&a, added("far")).await.entry().clone();
    let reply = far
        .endpoint()
        .call(Bytes::from_static(b"back"))
        .await
        .unwrap();
    assert_eq!(&reply[..], b"back");
}

/// A ring A–B–C–D–A (each dials the next).
async fn ring(prefix: &str) -> (MemTransport, [Node; 4]) {
    let mem = MemTransport::new();
    let nodes = [node(&mem), node(&mem), node(&mem), node(&mem)];
    let mut addrs = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        let at = format!("mem://{prefix}-{i}").parse().unwrap();
        addrs.push(n.listen(&at).await.unwrap());
    }
    for i in 0..4 {
        nodes[i].connect(&addrs[(i + 1) % 4]).await.unwrap();
    }
    (mem, nodes)
}

/// No node holds a route through itself, and every node sees `name` once.
fn loop_free(nodes: &[Node], name: &str) {
    for n in nodes {
        let me = n.kernel().node();
        for r in n.routes() {
            assert!(!r.path.contains(&me), "a route through its own node: {r:?}");
            assert!(r.path.len() <= n.config().max_hops);
        }
        assert!(n.kernel().registry().lookup_all(name).len() <= 1);
    }
}

#[tokio::test]
async fn ring_uses_the_shorter_way_and_reroutes_when_cut() {
    let (_mem, [a, b, c, d]) = ring("ring").await;
    let (_r, echo) = register(&b, "far");
    let far = until(&a, added("far")).await.entry().clone();
    assert_eq!(far.node(), b.kernel().node());
    // A reaches B directly (1 hop) and round the other way (D, C: 3).
    eventually("A knows both ways to B's server", || {
        a.routes().iter().filter(|r| r.name == "far").count() == 2
    })
    .await;
    let nodes = [a.clone(), b.clone(), c.clone(), d.clone()];
    loop_free(&nodes, "far");
    let routes = a.routes();
    let best = routes.iter().find(|r| r.name == "far" && r.best).unwrap();
    assert_eq!(best.path, vec![b.kernel().node()]);
    let other = routes.iter().find(|r| r.name == "far" && !r.best).unwrap();
    assert_eq!(
        other.path,
        vec![b.kernel().node(), c.kernel().node(), d.kernel().node()]
    );
    let reply = far.endpoint().call(Bytes::from_static(b"1")).await.unwrap();
    assert_eq!(&reply[..], b"1");

    // Cut A–B: A goes round through D and C, with the same entry.
    let casts_before = echo.casts.load(Ordering::SeqCst);
    assert!(a.close_link(link_to(&a, &b)));
    eventually("A re-routes through D", || {
        let r = a.routes();
        r.len() == 1 && r[0].path.len() == 3
    })
    .await;
    loop_free(&nodes, "far");
    let reply = far.endpoint().call(Bytes::from_static(b"2")).await.unwrap();
    assert_eq!(&reply[..], b"2");
    far.endpoint().cast(Bytes::from_static(b"c")).await.unwrap();
    eventually("the cast goes round", || {
        echo.casts.load(Ordering::SeqCst) == casts_before + 1
    })
    .await;
    // A's entry never left: only its route changed.
    assert_eq!(a.kernel().registry().lookup("far").unwrap(), far);

    // Cut C–D too: B's server is out of A's reach.
    let mut watch = a.kernel().registry().watch();
    assert!(c.close_link(link_to(&c, &d)));
    let reason = removal(&mut watch, "far", "A did not see the server withdrawn").await;
    assert!(matches!(reason, ExitReason::LinkDown(_)), "{reason:?}");
    assert!(a.routes().is_empty(), "{:?}", a.routes());
}

#[tokio::test]
async fn hop_limit_stops_far_routes() {
    // A chain of 4 with a hop limit of 2: the far end is out of reach.
    let mem = MemTransport::new();
    let mut cfg = super::tests::config();
    cfg.max_hops = 2;
    let mk = || {
        let mut t = Transports::new();
        t.add(Arc::new(mem.clone()));
        Node::with_config(Kernel::new(), t, cfg.clone())
    };
    let ns = [mk(), mk(), mk(), mk()];
    for i in 0..3 {
        let at = ns[i + 1]
            .listen(&format!("mem://hops-{i}").parse().unwrap())
            .await
            .unwrap();
        ns[i].connect(&at).await.unwrap();
    }
    let (_r2, _) = register(&ns[2], "two");
    let (_r3, _) = register(&ns[3], "three");
    until(&ns[0], added("two")).await;
    // "three" is 3 hops from node 0: node 1 takes it (2 hops) but does not
    // forward it. Node 1 seeing it is the sign it is settled.
    until(&ns[1], added("three")).await;
    eventually("node 2's announcements are done", || {
        ns[1].routes().len() == 2
    })
    .await;
    assert!(ns[0].kernel().registry().lookup("three").is_err());
    assert!(ns[0].routes().iter().all(|r| r.name != "three"));
    // Node 1 says which of its routes it holds back for the hop limit:
    // "three" (2 hops), not "two" (1 hop); node 0's "two" (2 hops) too.
    let held = |n: &Node| {
        let mut v: Vec<(String, bool)> = n
            .routes()
            .into_iter()
            .map(|r| (r.name, r.at_hop_limit))
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        held(&ns[1]),
        [("three".to_owned(), true), ("two".to_owned(), false)]
    );
    assert_eq!(held(&ns[0]), [("two".to_owned(), true)]);
}

#[tokio::test]
async fn routes_over_a_lower_hop_limit_are_listed_while_announced() {
    // A chain of 4 where node 0's hop limit (2) is lower than the others'
    // (8): node 1 announces "three" (3 hops from node 0), node 0 refuses it
    // and says so, until node 1 withdraws it.
    let mem = MemTransport::new();
    let mk = |max_hops| {
        let mut cfg = super::tests::config();
        cfg.max_hops = max_hops;
        let mut t = Transports::new();
        t.add(Arc::new(mem.clone()));
        Node::with_config(Kernel::new(), t, cfg)
    };
    let ns = [mk(2), mk(8), mk(8), mk(8)];
    for i in 0..3 {
        let at = ns[i + 1]
            .listen(&format!("mem://far-{i}").parse().unwrap())
            .await
            .unwrap();
        ns[i].connect(&at).await.unwrap();
    }
    let (_r2, _) = register(&ns[2], "two");
    let (r3, _) = register(&ns[3], "three");
    until(&ns[0], added("two")).await;
    eventually("node 0 refuses the route to three", || {
        !ns[0].too_far_routes().is_empty()
    })
    .await;
    let far = ns[0].too_far_routes();
    assert_eq!(far.len(), 1, "{far:?}");
    assert_eq!(
        (far[0].name.as_str(), far[0].node, far[0].hops, far[0].limit),
        ("three", ns[3].kernel().node(), 3, 2)
    );
    assert!(ns[0].kernel().registry().lookup("three").is_err());
    assert!(ns[1].too_far_routes().is_empty());
    drop(r3);
    eventually("the withdrawn route is no longer listed", || {
        ns[0].too_far_routes().is_empty()
    })
    .await;
}

#[tokio::test]
async fn access_policies_apply_hop_by_hop() {
    let (_mem, a, b, c, _) = chain().await;
    let (ida, idb) = (a.kernel().node(), b.kernel().node());
    // C lets B look "far" up, but only A call it: a call from A arrives
    // at C as a call from B, so it is denied, not let through.
    c.access_policy()
        .set_text(&format!("far lookup {idb}\nfar call {ida}\n"))
        .unwrap();
    // B hides "secret" (a server of C's) from everyone.
    b.access_policy().set_text("secret all none\n").unwrap();
    let (_s, _) = register(&c, "secret");
    until(&b, added("secret")).await;
    let (_f, _) = register(&c, "far");
    let far = until(&a, added("far")).await.entry().clone();
    let err = far
        .endpoint()
        .call(Bytes::from_static(b"x"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::PermissionDenied { name, .. } if name == "far"),
        "{err:?}"
    );
    // "far" was announced after "secret" on the same link: A would have it.
    assert!(a.kernel().registry().lookup("secret").is_err());
    assert!(a.routes().iter().all(|r| r.name != "secret"));
    // B itself may call both.
    let secret = b.kernel().registry().lookup("secret").unwrap();
    let reply = secret
        .endpoint()
        .call(Bytes::from_static(b"ok"))
        .await
        .unwrap();
    assert_eq!(&reply[..], b"ok");
}

/// A peer without the routing feature bit (an older node, or the C peer)
/// gets no Route messages, only the node's own servers; its calls to a
/// server further away are still forwarded.
#[tokio::test]
async fn a_peer_without_routing_gets_no_routes_but_is_forwarded() {
    use crate::transport::{LinkIo, Transport};
    use crate::wire::{Config, Event, FramingKind, LocalInfo, Session};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let (mem, a, b, _c, at) = chain().await;
    let (_f, _) = register(&a, "far");
    until(&b, added("far")).await;
    let link = mem.connect(&at).await.unwrap();
    let LinkIo::Stream {
        mut reader,
        mut writer,
    } = link.io
    else {
        panic!("a mem link is a stream")
    };
    let mut old = Session::new(
        Config::new(FramingKind::ReliableStream),
        LocalInfo::new(NodeId::random()),
        Instant::now(),
    )
    .unwrap();
    assert_eq!(old.local().features, 0);
    let mut held = Vec::new();
    let mut saw_marker = false;
    let mut call = None;
    let mut answered = false;
    let mut buf = vec![0u8; 64 * 1024];
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        assert!(Instant::now() < deadline, "the old peer's exchange stalled");
        while let Some(out) = old.poll_transmit(Instant::now()) {
            writer.write_all(&out).await.unwrap();
        }
        writer.flush().await.unwrap();
        let n = tokio::time::timeout(Duration::from_secs(5), reader.read(&mut buf))
            .await
            .expect("B went quiet")
            .unwrap();
        assert!(n > 0, "B closed the link");
        old.handle_input(Instant::now(), &buf[..n]);
        while let Some(ev) = old.poll_event() {
            match ev {
                Event::Connected(_) => {
                    // Announced after whatever B announces on connect.
                    held.push(register(&b, "marker").0);
                    call = Some(old.call("far", Bytes::from_static(b"via b")).unwrap());
                }
                Event::PeerRouted(e, _) => panic!("a Route message to an old peer: {e:?}"),
                Event::PeerAnnounced(e) => {
                    assert_ne!(&*e.name, "far", "A's server announced as B's own");
                    saw_marker |= &*e.name == "marker";
                }
                Event::Reply { id, result } if Some(id) == call => {
                    assert_eq!(&result.unwrap()[..], b"via b");
                    answered = true;
                }
                Event::Closed { reason } => panic!("closed: {reason}"),
                _ => {}
            }
        }
        if saw_marker && answered {
            break;
        }
    }
}

/// A, B and C, with A and C linked to B only; `small` (0 for A, 2 for C)
/// takes pipe frames of up to 64 KiB, the others 256 KiB.
async fn chain_with_a_small_window(small: usize) -> (Node, Node, Node) {
    let mem = MemTransport::new();
    let mk = |i| {
        if i != small {
            return node(&mem);
        }
        let mut t = Transports::new();
        t.add(Arc::new(mem.clone()));
        let mut cfg = super::tests::config();
        cfg.pipe_window = 64 * 1024;
        Node::with_config(Kernel::new(), t, cfg)
    };
    let (a, b, c) = (mk(0), mk(1), mk(2));
    let at = b.listen(&"mem://relay-b".parse().unwrap()).await.unwrap();
    a.connect(&at).await.unwrap();
    c.connect(&at).await.unwrap();
    (a, b, c)
}

async fn next_frame(rx: &mut crate::PipeReader) -> Option<Bytes> {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("nothing within 5 s")
}

#[tokio::test]
async fn a_frame_too_long_for_the_next_hop_closes_the_pipe() {
    // A takes pipe frames of up to 64 KiB from B, B and C 256 KiB: a
    // frame in between crosses to C and back to B, and cannot cross B's
    // link to A (no route tells C how far its answers go).
    let (a, _b, c) = chain_with_a_small_window(0).await;
    let (_r, _) = register(&c, "far");
    let far = until(&a, added("far")).await.entry().clone();
    let (mine, theirs) = a.kernel().duplex();
    far.endpoint().open_pipe("echo", theirs).await.unwrap();
    let (mut rx, tx) = mine.split();
    assert_eq!(tx.max_frame(), Some(256 * 1024), "B and C take 256 KiB");
    tx.send(Bytes::from_static(b"first")).await.unwrap();
    assert_eq!(next_frame(&mut rx).await.as_deref(), Some(&b"first"[..]));
    // B cannot pass the echo on: it closes the pipe rather than drop the
    // frame and go on, so nothing written after it arrives either.
    tx.send(Bytes::from(vec![7u8; 100 * 1024])).await.unwrap();
    let _ = tx.send(Bytes::from_static(b"after")).await;
    assert_eq!(next_frame(&mut rx).await, None, "the pipe closes");
}

#[tokio::test]
async fn a_frame_too_long_for_a_later_hop_fails_at_the_writer() {
    // B takes pipe frames of up to 256 KiB from A, C only 64 KiB from B:
    // B's route announcement says so, and A's pipe refuses the frame.
    let (a, _b, c) = chain_with_a_small_window(2).await;
    let (_r, _) = register(&c, "far");
    let far = until(&a, added("far")).await.entry().clone();
    let (mine, theirs) = a.kernel().duplex();
    far.endpoint().open_pipe("echo", theirs).await.unwrap();
    let (mut rx, tx) = mine.split();
    assert_eq!(tx.max_frame(), Some(64 * 1024), "C takes 64 KiB");
    let err = tx.send(Bytes::from(vec![7u8; 100 * 1024])).await;
    assert_eq!(
        err,
        Err(crate::Error::FrameTooLarge {
            len: 100 * 1024,
            max: 64 * 1024
        })
    );
    // Nothing was written; the pipe stays open.
    tx.send(Bytes::from_static(b"after")).await.unwrap();
    assert_eq!(next_frame(&mut rx).await.as_deref(), Some(&b"after"[..]));
    let most = Bytes::from(vec![8u8; 64 * 1024]);
    tx.send(most.clone()).await.unwrap();
    assert_eq!(next_frame(&mut rx).await, Some(most));
}

/// An endpoint that keeps the trace context each call and cast it gets
/// runs in.
#[derive(Debug, Default)]
struct TraceSeen(std::sync::Mutex<Vec<Option<crate::TraceContext>>>);

impl TraceSeen {
    fn seen(&self) -> Vec<Option<crate::TraceContext>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
    fn record(&self) {
        let t = crate::trace::current_trace();
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(t);
    }
}

#[async_trait::async_trait]
impl Endpoint for TraceSeen {
    fn try_cast(&self, _msg: Bytes) -> Result<(), Error> {
        self.record();
        Ok(())
    }
    async fn call(&self, msg: Bytes) -> Result<Bytes, Error> {
        self.record();
        Ok(msg)
    }
    async fn open_pipe(&self, _port: &str, _end: PipeEnd) -> Result<(), Error> {
        Ok(())
    }
}

#[tokio::test]
async fn trace_context_goes_through_the_middle_node() {
    use crate::trace::with_trace;
    let (_mem, a, _b, c, _) = chain().await;
    let seen = Arc::new(TraceSeen::default());
    let _reg = c
        .kernel()
        .registry()
        .register("traced", Capabilities::new(), seen.clone())
        .unwrap();
    let far = until(&a, added("traced")).await.entry().clone();
    let t: crate::TraceContext = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        .parse()
        .unwrap();
    // A call and a cast made in the trace, then a call outside any trace.
    with_trace(t, async {
        far.endpoint().call(Bytes::from_static(b"x")).await?;
        far.endpoint().cast(Bytes::from_static(b"y")).await
    })
    .await
    .unwrap();
    eventually("the cast arrives", || seen.seen().len() == 2).await;
    far.endpoint().call(Bytes::from_static(b"z")).await.unwrap();
    assert_eq!(seen.seen(), vec![Some(t), Some(t), None]);
}
