//! Two or more nodes in one process, linked over `mem://`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use super::*;
use crate::transport::MemTransport;
use crate::{Capabilities, Endpoint, Entry, ExitReason, PipeEnd, Registration, RegistryEvent};

/// A server for tests: echoes calls, counts casts, echoes pipe frames on
/// port `echo`, swallows them on port `sink` (counting bytes), and never
/// answers calls whose payload is `b"hang"`.
#[derive(Debug, Default)]
pub(super) struct Echo {
    pub(super) casts: AtomicU64,
    sunk: Arc<AtomicU64>,
}

#[async_trait]
impl Endpoint for Echo {
    fn try_cast(&self, _msg: Bytes) -> Result<(), Error> {
        self.casts.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    async fn call(&self, msg: Bytes) -> Result<Bytes, Error> {
        match &msg[..] {
            b"hang" => std::future::pending().await,
            b"fail" => Err(Error::Decode("cannot decode \"fail\"".into())),
            _ => Ok(msg),
        }
    }

    async fn open_pipe(&self, port: &str, end: PipeEnd) -> Result<(), Error> {
        match port {
            "echo" => {
                tokio::spawn(async move {
                    let (mut r, w) = end.split();
                    while let Some(f) = r.recv().await {
                        if w.send(f).await.is_err() {
                            break;
                        }
                    }
                });
                Ok(())
            }
            "collect" => {
                // Read to the end, then answer with the byte count.
                tokio::spawn(async move {
                    let (mut r, w) = end.split();
                    let mut total = 0u64;
                    while let Some(f) = r.recv().await {
                        total += f.len() as u64;
                    }
                    let _ = w.send(Bytes::from(total.to_be_bytes().to_vec())).await;
                });
                Ok(())
            }
            "greet" => {
                // Writes one frame, reads nothing.
                tokio::spawn(async move {
                    let (_r, w) = end.split();
                    let _ = w.send(Bytes::from_static(b"hello")).await;
                });
                Ok(())
            }
            "sink" => {
                let sunk = self.sunk.clone();
                tokio::spawn(async move {
                    let (mut r, _w) = end.split();
                    while let Some(f) = r.recv().await {
                        sunk.fetch_add(f.len() as u64, Ordering::SeqCst);
                    }
                });
                Ok(())
            }
            _ => Err(Error::NoSuchPort {
                name: "echo".into(),
                port: port.into(),
            }),
        }
    }
}

pub(super) fn config() -> NodeConfig {
    NodeConfig {
        keepalive: Duration::from_millis(100),
        idle_timeout: Duration::from_millis(500),
        reconnect_min: Duration::from_millis(10),
        reconnect_max: Duration::from_millis(100),
        ..NodeConfig::default()
    }
}

pub(super) fn node(mem: &MemTransport) -> Node {
    let mut t = Transports::new();
    t.add(Arc::new(mem.clone()));
    Node::with_config(Kernel::new(), t, config())
}

pub(super) fn register(node: &Node, name: &str) -> (Registration, Arc<Echo>) {
    let echo = Arc::new(Echo::default());
    let reg = node
        .kernel()
        .registry()
        .register(name, Capabilities::new().accepts("bytes"), echo.clone())
        .unwrap();
    (reg, echo)
}

/// Wait until the registry reports an event that satisfies `pred`.
pub(super) async fn until(node: &Node, pred: impl Fn(&RegistryEvent) -> bool) -> RegistryEvent {
    let mut w = node.kernel().registry().watch();
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let ev = w.next().await.unwrap();
            if pred(&ev) {
                return ev;
            }
        }
    })
    .await
    .expect("the registry event did not come within 5 s")
}

pub(super) fn added(name: &str) -> impl Fn(&RegistryEvent) -> bool + '_ {
    move |ev| matches!(ev, RegistryEvent::Added(e) if e.name() == name)
}

pub(super) async fn pair() -> (MemTransport, Node, Node, Address) {
    let mem = MemTransport::new();
    let a = node(&mem);
    let b = node(&mem);
    let at = a.listen(&"mem://a".parse().unwrap()).await.unwrap();
    let peer = b.connect(&at).await.unwrap();
    assert_eq!(peer, a.kernel().node());
    (mem, a, b, at)
}

#[tokio::test]
async fn registries_federate_both_ways() {
    let (_mem, a, b, _) = pair().await;
    let (_ra, _) = register(&a, "on-a");
    let (_rb, _) = register(&b, "on-b");
    until(&b, added("on-a")).await;
    until(&a, added("on-b")).await;
    let e = b.kernel().registry().lookup("on-a").unwrap();
    assert_eq!(e.node(), a.kernel().node());
    assert_eq!(e.capabilities().accepts, ["bytes"]);
    // Query by node sees exactly the remote one.
    let remote = b
        .kernel()
        .registry()
        .query(&crate::Filter::any().on_node(a.kernel().node()));
    assert_eq!(remote.len(), 1);
}

#[tokio::test]
async fn remote_cast_and_call() {
    let (_mem, a, b, _) = pair().await;
    let (_r, echo) = register(&a, "echo");
    until(&b, added("echo")).await;
    let e = b.kernel().registry().lookup("echo").unwrap();
    for _ in 0..10 {
        e.endpoint().cast(Bytes::from_static(b"x")).await.unwrap();
    }
    // Calls are ordered behind the casts on the link.
    let reply = e.endpoint().call(Bytes::from_static(b"hi")).await.unwrap();
    assert_eq!(reply, Bytes::from_static(b"hi"));
    assert_eq!(echo.casts.load(Ordering::SeqCst), 10);
    // A server's error crosses the link with its kind.
    let err = e
        .endpoint()
        .call(Bytes::from_static(b"fail"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Decode(_)), "{err:?}");
}

/// A node on `mem` with `max_queued` bytes of queue for each link.
fn queued_node(mem: &MemTransport, max_queued: usize) -> Node {
    let mut t = Transports::new();
    t.add(Arc::new(mem.clone()));
    Node::with_config(
        Kernel::new(),
        t,
        NodeConfig {
            max_queued,
            ..config()
        },
    )
}

/// Nodes `a` and `b` linked over `mem://`, `b` with `max_queued` bytes
/// of queue for the link; `echo` on `a`, as `b` sees it.
async fn queued_pair(max_queued: usize) -> (Node, Node, Arc<Echo>, Registration, Entry) {
    let mem = MemTransport::new();
    let a = node(&mem);
    let b = queued_node(&mem, max_queued);
    let at = a.listen(&"mem://a".parse().unwrap()).await.unwrap();
    b.connect(&at).await.unwrap();
    let (reg, echo) = register(&a, "echo");
    until(&b, added("echo")).await;
    let e = b.kernel().registry().lookup("echo").unwrap();
    (a, b, echo, reg, e)
}

#[tokio::test]
async fn try_casts_beyond_the_link_budget_fail_and_nothing_accepted_is_lost() {
    // The test's single thread does not let the driver run while it
    // casts: casts go straight into the idle link's session; when its
    // send queue is full the caster writes what waits itself, until the
    // line (256 KiB in memory) and the link's writer (1 MiB) take no
    // more; then they pile up in front of it until the budget is spent.
    let (_a, b, echo, _r, e) = queued_pair(64 * 1024).await;
    let msg = Bytes::from(vec![1u8; 1024]);
    let bound = crate::wire::Config::new(crate::wire::FramingKind::ReliableStream).max_send_queue
        as u64
        + (256 + 1024)
        + 64;
    let mut sent = 0u64;
    let busy = loop {
        match e.endpoint().try_cast(msg.clone()) {
            Ok(()) => sent += 1,
            Err(err) => break err,
        }
        assert!(sent <= bound, "the budget did not hold");
    };
    assert!(sent > 64, "casts did not go onto the idle link");
    assert!(
        matches!(busy, Error::LinkBusy { limit: 65536, .. }),
        "{busy:?}"
    );
    assert!(busy.to_string().contains("busy"), "{busy}");
    // The link shows what waits to be sent: every accepted cast.
    assert_eq!(b.links()[0].send_queue_bytes, 64 * 1024);
    // A cast that would wait for room, dropped before it got any, sends
    // nothing.
    drop(e.endpoint().cast(msg.clone()));
    // A call waits for room too; once the driver ran, every accepted cast
    // arrived (the call is ordered behind them).
    let reply = e.endpoint().call(Bytes::from_static(b"hi")).await;
    assert_eq!(reply.unwrap(), Bytes::from_static(b"hi"));
    assert_eq!(echo.casts.load(Ordering::SeqCst), sent);
    assert_eq!(b.links()[0].send_queue_bytes, 0, "all sent");
    e.endpoint().try_cast(msg).unwrap();
}

#[tokio::test]
async fn a_caster_faster_than_its_link_waits_for_room_and_every_cast_arrives() {
    // 64 KiB of queue and 8 MiB of casts, from a task the driver only
    // runs beside when the caster waits: it outruns the link 128 times.
    let (_a, _b, echo, _r, e) = queued_pair(64 * 1024).await;
    let msg = Bytes::from(vec![1u8; 1024]);
    const CASTS: u64 = 8 * 1024;
    for _ in 0..CASTS {
        e.endpoint().cast(msg.clone()).await.unwrap();
    }
    let reply = e.endpoint().call(Bytes::from_static(b"hi")).await;
    assert_eq!(reply.unwrap(), Bytes::from_static(b"hi"));
    assert_eq!(echo.casts.load(Ordering::SeqCst), CASTS);
}

#[tokio::test]
async fn a_cast_waiting_for_room_fails_when_the_link_closes() {
    let (_a, b, echo, _r, e) = queued_pair(1024).await;
    let msg = Bytes::from(vec![1u8; 1024]);
    // Fill the link (neither driver runs) and the queue in front of it.
    let mut sent = 0u64;
    while e.endpoint().try_cast(msg.clone()).is_ok() {
        sent += 1;
        assert!(sent < 4096, "the link never filled");
    }
    let waiting = e.endpoint().cast(msg);
    let link = b.links()[0].id;
    assert!(b.close_link(link));
    let err = waiting.await.unwrap_err();
    assert!(matches!(err, Error::ServerStopped { .. }), "{err:?}");
    assert!(echo.casts.load(Ordering::SeqCst) <= sent);
}

/// A server that keeps every cast it gets (a server that never gets
/// round to them): the casts stay held against the link's budget. It
/// also notes how many casts came in each hand-over (a `try_cast` is
/// one).
#[derive(Debug, Default)]
struct Hoard(std::sync::Mutex<Vec<Bytes>>, std::sync::Mutex<Vec<usize>>);

#[async_trait]
impl Endpoint for Hoard {
    fn try_cast(&self, msg: Bytes) -> Result<(), Error> {
        self.try_cast_batch(vec![msg])
    }

    fn try_cast_batch(&self, msgs: Vec<Bytes>) -> Result<(), Error> {
        self.1
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(msgs.len());
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(msgs);
        Ok(())
    }

    async fn call(&self, msg: Bytes) -> Result<Bytes, Error> {
        Ok(msg)
    }

    async fn open_pipe(&self, _port: &str, _end: PipeEnd) -> Result<(), Error> {
        Ok(())
    }
}

#[tokio::test]
async fn a_link_left_unread_over_its_budget_closes_as_a_limit_not_an_idle_peer() {
    let mem = MemTransport::new();
    let a = node(&mem);
    let b = node(&mem);
    let _reg = a
        .kernel()
        .registry()
        .register("hoard", Capabilities::new(), Arc::new(Hoard::default()))
        .unwrap();
    let at = a
        .listen(&"mem://a?link_budget=64KiB".parse().unwrap())
        .await
        .unwrap();
    b.connect(&at).await.unwrap();
    until(&b, added("hoard")).await;
    let e = b.kernel().registry().lookup("hoard").unwrap();
    let mut watch = b.kernel().registry().watch();
    // 128 KiB of casts: `a` stops reading the link past 64 KiB held, and
    // the peer keeps its keepalives coming, unread.
    for _ in 0..128 {
        e.endpoint()
            .cast(Bytes::from(vec![1u8; 1024]))
            .await
            .unwrap();
    }
    let reason = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Some(RegistryEvent::Removed { entry, reason }) = watch.next().await
                && entry.name() == "hoard"
            {
                return reason;
            }
        }
    })
    .await
    .expect("the link closed within 5 s");
    let ExitReason::LinkDown(why) = reason else {
        panic!("{reason:?}");
    };
    assert!(why.contains("stopped reading the link"), "{why}");
    assert!(why.contains("budget of 65536 bytes"), "{why}");
    assert!(!why.contains("nothing heard"), "{why}");
}

#[tokio::test]
async fn calls_beyond_max_serving_are_answered_busy_at_once() {
    let mem = MemTransport::new();
    let a = serving_two(&mem);
    let (_r, _echo) = register(&a, "echo");
    let at = a.listen(&"mem://a".parse().unwrap()).await.unwrap();
    five_hanging_calls(&mem, &at, 2).await;
}

#[tokio::test]
async fn a_listen_address_sets_the_limits_of_the_links_it_accepts() {
    let mem = MemTransport::new();
    let a = serving_two(&mem);
    let (_r, _echo) = register(&a, "echo");
    let own = a
        .listen(
            &"mem://a-own?max_serving=4&link_budget=1MiB"
                .parse()
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(
        own.to_string(),
        "mem://a-own",
        "the parameters are the node's"
    );
    let plain = a.listen(&"mem://a-plain".parse().unwrap()).await.unwrap();
    five_hanging_calls(&mem, &own, 4).await;
    five_hanging_calls(&mem, &plain, 2).await;
    let err = a
        .listen(&"mem://a-bad?max_serving=none".parse().unwrap())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidAddress { reason, .. } if reason.contains("max_serving")),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_keepalive_not_shorter_than_the_idle_timeout_is_refused_at_start() {
    let mem = MemTransport::new();
    let a = node(&mem);
    let at = a.listen(&"mem://ok".parse().unwrap()).await.unwrap();
    let mut t = Transports::new();
    t.add(Arc::new(mem.clone()));
    let bad = Node::with_config(
        Kernel::new(),
        t,
        NodeConfig {
            keepalive: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(2),
            ..config()
        },
    );
    let refused = |err: Error| {
        assert!(
            matches!(&err, Error::BadSetting { key, reason }
                if key == "keepalive" && reason.contains("not shorter than idle_timeout")),
            "{err:?}"
        );
    };
    refused(bad.connect(&at).await.unwrap_err());
    refused(bad.listen(&"mem://bad".parse().unwrap()).await.unwrap_err());
    assert!(bad.links().is_empty());
}

/// A node on `mem` that serves two calls from each link at once.
fn serving_two(mem: &MemTransport) -> Node {
    let mut t = Transports::new();
    t.add(Arc::new(mem.clone()));
    Node::with_config(
        Kernel::new(),
        t,
        NodeConfig {
            max_serving: 2,
            ..config()
        },
    )
}

/// Five calls that are never answered, to "echo" (an [`Echo`]) from a new
/// node linked to the node at `at`, which serves `serving` of them: the
/// others are answered busy at once.
async fn five_hanging_calls(mem: &MemTransport, at: &Address, serving: usize) {
    let b = node(mem);
    b.connect(at).await.unwrap();
    until(&b, added("echo")).await;
    let e = b.kernel().registry().lookup("echo").unwrap();
    let calls: Vec<_> = (0..5)
        .map(|_| {
            let e = e.clone();
            tokio::spawn(async move { e.endpoint().call(Bytes::from_static(b"hang")).await })
        })
        .collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while calls.iter().filter(|c| c.is_finished()).count() < 5 - serving {
        assert!(tokio::time::Instant::now() < deadline, "no busy answers");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut busy = 0;
    for call in calls {
        if !call.is_finished() {
            call.abort();
            continue;
        }
        match call.await.unwrap() {
            Err(Error::NodeBusy { name, reason }) => {
                assert_eq!(name, "echo");
                assert!(reason.contains(&format!("{serving} calls")), "{reason}");
                busy += 1;
            }
            other => panic!("expected busy, got {other:?}"),
        }
    }
    assert_eq!(busy, 5 - serving);
}

#[tokio::test]
async fn withdrawn_entry_leaves_with_its_reason() {
    let (_mem, a, b, _) = pair().await;
    let (mut r, _) = register(&a, "w");
    until(&b, added("w")).await;
    r.set_exit_reason(ExitReason::Failed("crashed".into()));
    drop(r);
    let ev = until(&b, |ev| matches!(ev, RegistryEvent::Removed { .. })).await;
    assert!(matches!(
        ev,
        RegistryEvent::Removed { reason: ExitReason::Failed(m), .. } if m == "crashed"
    ));
}

/// Two linked nodes, the first serving [`Echo`] as "echo"; hold it while
/// a pipe from [`Self::open`] is in use.
struct EchoAcross {
    _mem: MemTransport,
    _a: Node,
    b: Node,
    _reg: Registration,
    echo: Arc<Echo>,
}

impl EchoAcross {
    async fn new() -> Self {
        let (mem, a, b, _) = pair().await;
        let (reg, echo) = register(&a, "echo");
        until(&b, added("echo")).await;
        Self {
            _mem: mem,
            _a: a,
            b,
            _reg: reg,
            echo,
        }
    }

    /// A pipe from the second node to the echo server's `port`.
    async fn open(&self, port: &str) -> PipeEnd {
        let e = self.b.kernel().registry().lookup("echo").unwrap();
        let (mine, theirs) = self.b.kernel().duplex();
        e.endpoint().open_pipe(port, theirs).await.unwrap();
        mine
    }
}

/// Send `frames` through a pipe to the echo server of another node, and
/// check that each comes back intact and in order.
async fn echo_across_a_link(frames: Vec<Bytes>) {
    let across = EchoAcross::new().await;
    let mut mine = across.open("echo").await;
    let w = mine.writer.clone();
    let sent = frames.clone();
    let writer = tokio::spawn(async move {
        for f in sent {
            w.send(f).await.unwrap();
        }
    });
    for f in &frames {
        let got = tokio::time::timeout(Duration::from_secs(10), mine.reader.recv())
            .await
            .expect("a frame stalled")
            .unwrap();
        assert!(got == *f, "a frame of {} bytes came back changed", f.len());
    }
    writer.await.unwrap();
}

#[tokio::test]
async fn pipes_cross_nodes_intact_with_eof() {
    let frames: Vec<Bytes> = (0..200u32)
        .map(|i| Bytes::from(vec![(i % 251) as u8; (i as usize * 97) % 5000]))
        .collect();
    echo_across_a_link(frames).await;
}

#[tokio::test]
async fn large_frames_straddling_receive_buffers_cross_intact() {
    // Frames of 180 KiB up to the whole pipe window (256 KiB): most of
    // them straddle the end of a 512 KiB buffer a stream link reads into,
    // and move, partly read, into the next one.
    let frames: Vec<Bytes> = (0..16u32)
        .map(|i| {
            let len = (180 * 1024 + i as usize * 5 * 1024 + i as usize).min(256 * 1024);
            Bytes::from((0..len).map(|j| (j as u32 ^ i) as u8).collect::<Vec<u8>>())
        })
        .collect();
    echo_across_a_link(frames).await;
}

#[tokio::test]
async fn a_frame_longer_than_the_peers_pipe_window_is_refused_and_the_pipe_goes_on() {
    let across = EchoAcross::new().await;
    let mut mine = across.open("echo").await;
    let window = config().pipe_window as usize;
    assert_eq!(mine.writer.max_frame(), Some(window));
    let long = Bytes::from(vec![1u8; window + 1]);
    assert_eq!(
        mine.writer.send(long).await,
        Err(Error::FrameTooLarge {
            len: window + 1,
            max: window
        })
    );
    // Nothing was written, and the pipe still carries frames both ways.
    for f in [Bytes::from(vec![2u8; window]), Bytes::from_static(b"after")] {
        mine.writer.send(f.clone()).await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), mine.reader.recv())
            .await
            .expect("the pipe stalled")
            .expect("the pipe closed");
        assert!(got == f, "a frame of {} bytes came back changed", f.len());
    }
}

#[tokio::test]
async fn large_transfer_and_eof_to_a_sink() {
    let across = EchoAcross::new().await;
    let (_reader, writer) = across.open("sink").await.split();
    let chunk = Bytes::from(vec![7u8; 64 * 1024]);
    for _ in 0..64 {
        writer.send(chunk.clone()).await.unwrap();
    }
    drop(writer);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while across.echo.sunk.load(Ordering::SeqCst) < 64 * 64 * 1024 {
        assert!(tokio::time::Instant::now() < deadline, "transfer stalled");
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn half_close_lets_a_request_stream_get_its_answer() {
    let across = EchoAcross::new().await;
    let (mut reader, writer) = across.open("collect").await.split();
    for _ in 0..10 {
        writer.send(Bytes::from(vec![1u8; 1000])).await.unwrap();
    }
    // Done writing, still reading: the server must see end of stream.
    drop(writer);
    let answer = tokio::time::timeout(Duration::from_secs(5), reader.recv())
        .await
        .expect("no answer: end of stream did not cross the link")
        .expect("an answer frame");
    assert_eq!(answer[..], 10_000u64.to_be_bytes());
    assert_eq!(reader.recv().await, None, "then end of stream");
}

#[tokio::test]
async fn refused_port_closes_the_pipe() {
    let across = EchoAcross::new().await;
    let mut mine = across.open("nope").await;
    // The refusal comes back as the pipe closing: end of stream.
    let got = tokio::time::timeout(Duration::from_secs(5), mine.reader.recv()).await;
    assert_eq!(got.unwrap(), None);
}

#[tokio::test]
async fn stale_remote_endpoint_gets_not_found() {
    let (_mem, a, b, _) = pair().await;
    let (r, _) = register(&a, "echo");
    until(&b, added("echo")).await;
    let stale = b.kernel().registry().lookup("echo").unwrap();
    drop(r);
    until(&b, |ev| matches!(ev, RegistryEvent::Removed { .. })).await;
    // The link is still up; the peer answers that it has no such server.
    let err = stale.endpoint().call(Bytes::new()).await.unwrap_err();
    assert_eq!(err, Error::NotFound("echo".into()));
}

#[tokio::test]
async fn link_loss_removes_entries_and_fails_calls() {
    let (_mem, a, b, _) = pair().await;
    let (_r, _) = register(&a, "echo");
    until(&b, added("echo")).await;
    let e = b.kernel().registry().lookup("echo").unwrap();
    let hanging = tokio::spawn(async move { e.endpoint().call(Bytes::from_static(b"hang")).await });
    // Give the call time to be sent: wait until A's link saw payload.
    let mut watch = b.kernel().registry().watch();
    a.shutdown();
    let reason = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Some(RegistryEvent::Removed { entry, reason }) = watch.next().await
                && entry.name() == "echo"
            {
                return reason;
            }
        }
    })
    .await
    .unwrap();
    assert!(matches!(reason, ExitReason::LinkDown(_)), "{reason:?}");
    let err = hanging.await.unwrap().unwrap_err();
    assert!(matches!(err, Error::ServerStopped { .. }), "{err:?}");
}

#[tokio::test]
async fn dialler_reconnects_and_registries_heal() {
    let (mem, a, b, at) = pair().await;
    let (_r, _) = register(&a, "echo");
    until(&b, added("echo")).await;
    a.shutdown();
    until(&b, |ev| matches!(ev, RegistryEvent::Removed { .. })).await;
    // A new node comes up at the same address; B dials it by itself.
    let a2 = node(&mem);
    let (_r2, _) = register(&a2, "echo");
    let mut w = b.kernel().registry().watch();
    // The old listener may still hold the name for a moment; retry.
    loop {
        match a2.listen(&at).await {
            Ok(_) => break,
            Err(_) => tokio::task::yield_now().await,
        }
    }
    let healed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Some(RegistryEvent::Added(e)) = w.next().await
                && e.name() == "echo"
            {
                return e.node();
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(healed, a2.kernel().node());
    assert!(b.links().iter().any(|l| l.connected && l.reconnects >= 1));
}

#[tokio::test]
async fn shutting_down_a_node_reports_its_peers_servers_as_link_down() {
    let (_mem, a, b, _) = pair().await;
    let (_r, _) = register(&a, "echo");
    until(&b, added("echo")).await;
    let mut w = b.kernel().registry().watch();
    b.shutdown();
    let reason = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Some(RegistryEvent::Removed { entry, reason }) = w.next().await
                && entry.name() == "echo"
            {
                return reason;
            }
        }
    })
    .await
    .unwrap();
    assert!(matches!(reason, ExitReason::LinkDown(_)), "{reason:?}");
}

#[tokio::test]
async fn a_read_only_peer_looks_up_and_reads_but_may_not_call_or_write() {
    let (_mem, a, b, _) = pair().await;
    a.access_policy()
        .set_text(&format!("readonly {}\n", b.kernel().node()))
        .unwrap();
    let (_r, echo) = register(&a, "echo");
    // Lookup (and so watch) works.
    until(&b, added("echo")).await;
    let e = b.kernel().registry().lookup("echo").unwrap();
    // A call is refused by the node, saying why.
    let err = e
        .endpoint()
        .call(Bytes::from_static(b"x"))
        .await
        .unwrap_err();
    match &err {
        Error::PermissionDenied { name, action } => {
            assert_eq!(name, "echo");
            assert!(action.contains("read-only"), "{err}");
        }
        other => panic!("not a refusal: {other:?}"),
    }
    // A pipe to read from (a tap) works.
    let (mine, theirs) = b.kernel().duplex();
    e.endpoint().open_pipe("greet", theirs).await.unwrap();
    let (mut reader, _w) = mine.split();
    let got = tokio::time::timeout(Duration::from_secs(5), reader.recv())
        .await
        .expect("no frame")
        .expect("the pipe closed");
    assert_eq!(&got[..], b"hello");
    // Writing on a pipe it opened closes that pipe; nothing reaches the server.
    let (mine, theirs) = b.kernel().duplex();
    e.endpoint().open_pipe("sink", theirs).await.unwrap();
    let (mut reader, writer) = mine.split();
    let _ = writer.send(Bytes::from_static(b"typed")).await;
    let end = tokio::time::timeout(Duration::from_secs(5), reader.recv())
        .await
        .expect("the pipe stayed open");
    assert_eq!(end, None);
    assert_eq!(echo.sunk.load(Ordering::SeqCst), 0);
    // The node goes on: the same peer, no longer read-only, may call.
    a.access_policy().set_text("default allow").unwrap();
    let e = b.kernel().registry().lookup("echo").unwrap();
    assert_eq!(
        e.endpoint().call(Bytes::from_static(b"x")).await.unwrap(),
        "x"
    );
}

/// `n` numbered casts (and a call every 700) from `b` to a hoard on `a`,
/// with `max_queued` bytes of queue on `b`'s link: they arrive in order,
/// whichever way each went (straight into the session, or queued in the
/// driver while the session's queue was full or others waited there),
/// and whether they reached the hoard one by one or in batches. Returns
/// how many came in each hand-over.
async fn casts_arrive_in_order(max_queued: usize, n: u64) -> Vec<usize> {
    let mem = MemTransport::new();
    let a = node(&mem);
    let b = queued_node(&mem, max_queued);
    let hoard = Arc::new(Hoard::default());
    let _reg = a
        .kernel()
        .registry()
        .register("hoard", Capabilities::new(), hoard.clone())
        .unwrap();
    let at = a.listen(&"mem://a".parse().unwrap()).await.unwrap();
    b.connect(&at).await.unwrap();
    until(&b, added("hoard")).await;
    let e = b.kernel().registry().lookup("hoard").unwrap();
    for i in 0..n {
        let msg = Bytes::copy_from_slice(&i.to_be_bytes());
        if i % 700 == 699 {
            assert_eq!(e.endpoint().call(msg.clone()).await.unwrap(), msg);
        }
        e.endpoint().cast(msg).await.unwrap();
    }
    // The call is ordered behind every cast.
    e.endpoint().call(Bytes::from_static(b"end")).await.unwrap();
    let got = hoard.0.lock().unwrap_or_else(|e| e.into_inner());
    let numbers: Vec<u64> = got
        .iter()
        .map(|m| u64::from_be_bytes(m[..8].try_into().unwrap()))
        .collect();
    assert_eq!(numbers, (0..n).collect::<Vec<_>>());
    drop(got);
    hoard.1.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

#[tokio::test]
async fn casts_keep_their_order_across_the_direct_and_queued_paths() {
    // One thread: casts go straight into the session until its queue is
    // full, then queue in the driver, then go straight in again.
    casts_arrive_in_order(4 * 1024, 5000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn casts_keep_their_order_while_the_driver_writes_beside_the_sender() {
    casts_arrive_in_order(4 * 1024, 20_000).await;
}

#[tokio::test]
async fn the_casts_of_one_read_reach_their_server_together_in_order() {
    // One thread: the casts leave in a few writes, and `a`'s driver
    // reads many at once.
    let batches = casts_arrive_in_order(1024 * 1024, 2000).await;
    let longest = batches.iter().copied().max().unwrap_or(0);
    assert!(longest > 1, "every cast was handed over alone");
    assert!(
        longest <= super::cast_batch::CAST_BATCH,
        "a batch of {longest} casts"
    );
}

#[tokio::test]
async fn the_casts_of_one_read_to_a_group_take_turns_among_its_members() {
    // One thread: `a`'s driver reads many casts at once, all to one name.
    let (_mem, a, b, _) = pair().await;
    let members = [Arc::new(Hoard::default()), Arc::new(Hoard::default())];
    let _regs: Vec<_> = members
        .iter()
        .map(|m| {
            a.kernel()
                .registry()
                .join_group("g", Capabilities::new(), m.clone())
                .unwrap()
        })
        .collect();
    until(&b, added("g")).await;
    let e = b.kernel().registry().lookup("g").unwrap();
    let n = 200u64;
    for i in 0..n {
        e.endpoint()
            .cast(Bytes::copy_from_slice(&i.to_be_bytes()))
            .await
            .unwrap();
    }
    e.endpoint().call(Bytes::from_static(b"end")).await.unwrap();
    let got: Vec<Vec<u64>> = members
        .iter()
        .map(|m| {
            m.0.lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .map(|c| u64::from_be_bytes(c[..8].try_into().unwrap()))
                .collect()
        })
        .collect();
    // Every other cast to each member, as a lookup per cast picks them.
    let (first, second) = if got[0].first() == Some(&0) {
        (&got[0], &got[1])
    } else {
        (&got[1], &got[0])
    };
    assert_eq!(*first, (0..n).step_by(2).collect::<Vec<_>>());
    assert_eq!(*second, (1..n).step_by(2).collect::<Vec<_>>());
}
