//! What [`Node::links`] shows, checked at the moments it must already be
//! true: when the peer's servers show, when a call returns, after a
//! session resumed on a new TCP connection.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::tests::{added, config, node, pair, register, until};
use super::*;
use crate::transport::{Listener, MemTransport, Transport, io_error};
use crate::{Endpoint, PipeEnd, RegistryEvent};

/// The one link of `node` (the first, if a hand-over adds another).
fn only(node: &Node) -> LinkStatus {
    node.links().into_iter().next().expect("a link")
}

/// Poll `f` until it holds, for at most 10 s.
async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_sides_show_the_link_connected_once_the_peer_is_usable() {
    // The dialler sees the acceptor's servers only after the acceptor's
    // record shows the link connected with the dialler as its peer; a call
    // that returned is counted on both sides. Checked without polling,
    // many times over, on a runtime with threads to race on.
    for round in 0..30 {
        let mem = MemTransport::new();
        let (a, b) = (node(&mem), node(&mem));
        let (_r, _) = register(&a, "echo");
        let at = a.listen(&"mem://a".parse().unwrap()).await.unwrap();
        let mut seen = b.kernel().registry().watch();
        b.connect(&at).await.unwrap();
        // The dialler's record is up when connect returns.
        let lb = only(&b);
        assert!(lb.connected, "round {round}: dialler {lb:?}");
        assert_eq!(lb.peer, Some(a.kernel().node()));
        let echo = loop {
            match seen.next().await {
                Some(RegistryEvent::Added(e)) if e.name() == "echo" => break e,
                Some(_) => {}
                None => panic!("the watch ended"),
            }
        };
        let la = only(&a);
        assert!(la.connected, "round {round}: acceptor {la:?}");
        assert_eq!(la.peer, Some(b.kernel().node()), "round {round}");

        let payload = Bytes::from(vec![7u8; 300]);
        for call in 0..10 {
            let (a0, b0) = (only(&a).stats, only(&b).stats);
            let reply = echo.endpoint().call(payload.clone()).await.unwrap();
            assert_eq!(reply, payload);
            let (a1, b1) = (only(&a).stats, only(&b).stats);
            let at = format!("round {round} call {call}: acceptor {a1:?}, dialler {b1:?}");
            // The request: sent by the dialler, received by the acceptor.
            assert!(b1.payload_bytes_sent >= b0.payload_bytes_sent + 300, "{at}");
            assert!(b1.bytes_sent >= b0.bytes_sent + 300, "{at}");
            assert!(b1.frames_sent > b0.frames_sent, "{at}");
            assert!(
                a1.payload_bytes_received >= a0.payload_bytes_received + 300,
                "{at}"
            );
            assert!(a1.bytes_received >= a0.bytes_received + 300, "{at}");
            assert!(a1.frames_received > a0.frames_received, "{at}");
            // The reply: sent by the acceptor, received by the dialler.
            assert!(a1.payload_bytes_sent >= a0.payload_bytes_sent + 300, "{at}");
            assert!(a1.bytes_sent >= a0.bytes_sent + 300, "{at}");
            assert!(a1.frames_sent > a0.frames_sent, "{at}");
            assert!(
                b1.payload_bytes_received >= b0.payload_bytes_received + 300,
                "{at}"
            );
            assert!(b1.bytes_received >= b0.bytes_received + 300, "{at}");
            assert!(b1.frames_received > b0.frames_received, "{at}");
        }
        a.shutdown();
        b.shutdown();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_acceptor_shows_its_peer_when_the_peers_servers_show() {
    // The other direction: the acceptor learns the dialler's servers only
    // after its record shows the link connected with the dialler.
    for round in 0..30 {
        let mem = MemTransport::new();
        let (a, b) = (node(&mem), node(&mem));
        let (_r, _) = register(&b, "on-b");
        let at = a.listen(&"mem://a".parse().unwrap()).await.unwrap();
        let mut seen = a.kernel().registry().watch();
        b.connect(&at).await.unwrap();
        loop {
            match seen.next().await {
                Some(RegistryEvent::Added(e)) if e.name() == "on-b" => break,
                Some(_) => {}
                None => panic!("the watch ended"),
            }
        }
        let la = only(&a);
        assert!(la.connected, "round {round}: acceptor {la:?}");
        assert_eq!(la.peer, Some(b.kernel().node()), "round {round}");
        a.shutdown();
        b.shutdown();
    }
}

/// `tcp://host:port` over real sockets, for these tests (the TCP
/// transport proper lives in its own crate, which depends on this one).
#[derive(Debug)]
struct Tcp;

fn tcp_link(stream: TcpStream) -> Link {
    let name = |a: std::io::Result<SocketAddr>| {
        a.map_or_else(|_| "tcp://?".into(), |a| format!("tcp://{a}"))
    };
    let (local, remote) = (name(stream.local_addr()), name(stream.peer_addr()));
    let (r, w) = stream.into_split();
    Link::stream(LinkKind::ReliableStream, local, remote, r, w)
}

#[async_trait]
impl Transport for Tcp {
    fn scheme(&self) -> &'static str {
        "tcp"
    }

    async fn connect(&self, addr: &Address) -> Result<Link, Error> {
        let stream = TcpStream::connect(addr.authority())
            .await
            .map_err(|e| io_error(addr, &e))?;
        Ok(tcp_link(stream))
    }

    async fn listen(&self, addr: &Address) -> Result<Box<dyn Listener>, Error> {
        let listener = TcpListener::bind(addr.authority())
            .await
            .map_err(|e| io_error(addr, &e))?;
        Ok(Box::new(TcpListen(listener)))
    }
}

struct TcpListen(TcpListener);

#[async_trait]
impl Listener for TcpListen {
    async fn accept(&mut self) -> Result<Link, Error> {
        let (stream, _) = self
            .0
            .accept()
            .await
            .map_err(|e| io_error(&self.local_address(), &e))?;
        Ok(tcp_link(stream))
    }

    fn local_address(&self) -> Address {
        let at = self
            .0
            .local_addr()
            .expect("a bound listener has an address");
        format!("tcp://{at}").parse().expect("a tcp address")
    }
}

/// One relayed connection: the dialler's address, the relay's address
/// towards the listener, and the task copying between them.
type Conn = (SocketAddr, SocketAddr, JoinHandle<()>);

/// A TCP relay to `to` whose connections the test can cut. Records, for
/// each connection, the dialler's address and its own towards `to`.
struct Relay {
    at: Address,
    conns: Arc<Mutex<Vec<Conn>>>,
    accept: JoinHandle<()>,
}

impl Relay {
    async fn start(to: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let at = format!("tcp://{}", listener.local_addr().unwrap())
            .parse()
            .unwrap();
        let conns: Arc<Mutex<Vec<Conn>>> = Arc::default();
        let accept = tokio::spawn({
            let conns = conns.clone();
            async move {
                while let Ok((mut near, from)) = listener.accept().await {
                    let Ok(mut far) = TcpStream::connect(to).await else {
                        continue;
                    };
                    let via = far.local_addr().unwrap();
                    let copy = tokio::spawn(async move {
                        let _ = tokio::io::copy_bidirectional(&mut near, &mut far).await;
                    });
                    conns.lock().unwrap().push((from, via, copy));
                }
            }
        });
        Self { at, conns, accept }
    }

    /// Drop every connection (both sides see their link close).
    fn cut(&self) {
        for (_, _, copy) in self.conns.lock().unwrap().iter() {
            copy.abort();
        }
    }

    /// (dialler's address, relay's address towards the listener) of
    /// connection `n`.
    fn conn(&self, n: usize) -> Option<(SocketAddr, SocketAddr)> {
        self.conns.lock().unwrap().get(n).map(|c| (c.0, c.1))
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

fn tcp_node() -> Node {
    let mut t = Transports::new();
    t.add(Arc::new(Tcp));
    Node::with_config(
        Kernel::new(),
        t,
        NodeConfig {
            resume_grace: Duration::from_secs(10),
            ..config()
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_follow_a_session_that_resumes_on_a_new_tcp_connection() {
    let (a, b) = (tcp_node(), tcp_node());
    let (_r, _) = register(&a, "echo");
    let at = a
        .listen(&"tcp://127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let relay = Relay::start(at.authority().parse().unwrap()).await;
    b.connect(&relay.at).await.unwrap();
    until(&b, added("echo")).await;
    let echo = b.kernel().registry().lookup("echo").unwrap();
    echo.endpoint()
        .call(Bytes::from_static(b"hi"))
        .await
        .unwrap();

    let (from, via) = relay.conn(0).unwrap();
    let (la, lb) = (only(&a), only(&b));
    assert_eq!(la.remote, format!("tcp://{via}"));
    assert_eq!(lb.local, format!("tcp://{from}"));
    assert_eq!(lb.remote, relay.at.to_string());

    relay.cut();
    eventually("a second connection", || relay.conn(1).is_some()).await;
    let (from2, via2) = relay.conn(1).unwrap();
    assert_ne!(via, via2);
    // The session resumes on the new connection: the same link records
    // (same ids), now naming it, counted as a resume and a reconnect.
    eventually("both sides resumed", || {
        let (a2, b2) = (a.links(), b.links());
        a2.iter()
            .any(|l| l.id == la.id && l.connected && l.stats.resumes == 1)
            && b2
                .iter()
                .any(|l| l.id == lb.id && l.connected && l.stats.resumes == 1)
    })
    .await;
    let a2 = a.links().into_iter().find(|l| l.id == la.id).unwrap();
    let b2 = b.links().into_iter().find(|l| l.id == lb.id).unwrap();
    assert_eq!(a2.remote, format!("tcp://{via2}"), "{a2:?}");
    assert_eq!(a2.local, la.local, "the listener's side is the same port");
    assert_eq!(b2.local, format!("tcp://{from2}"), "{b2:?}");
    assert_eq!(b2.remote, relay.at.to_string());
    assert_eq!((a2.peer, b2.peer), (la.peer, lb.peer));
    assert_eq!(a2.reconnects, la.reconnects + 1);
    assert_eq!(b2.reconnects, lb.reconnects + 1);
    // The session goes on over it.
    let reply = echo.endpoint().call(Bytes::from_static(b"again")).await;
    assert_eq!(reply.unwrap(), Bytes::from_static(b"again"));
    a.shutdown();
    b.shutdown();
}

#[tokio::test]
async fn both_sides_measure_the_round_trip_of_an_idle_link() {
    // Over a reliable link the session measures no round trip
    // (`srtt_us` stays 0): the node's probe does, with only keepalives
    // moving on the link.
    let (_mem, a, b, _) = pair().await;
    eventually("a round trip on both sides", || {
        only(&a).rtt_us > 0 && only(&b).rtt_us > 0
    })
    .await;
    assert_eq!(
        only(&b).stats.srtt_us,
        0,
        "no session RTT on a reliable link"
    );
    // The probe's name is no server's: a call to it is NotFound, as for
    // any unknown name, and the node keeps serving.
    let (_r, _) = register(&a, "echo");
    until(&b, added("echo")).await;
    let echo = b.kernel().registry().lookup("echo").unwrap();
    assert_eq!(
        echo.endpoint()
            .call(Bytes::from_static(b"x"))
            .await
            .unwrap(),
        "x"
    );
}

#[tokio::test]
async fn a_pipe_writer_that_waits_for_credit_is_counted() {
    // The second node writes into an echo pipe and reads nothing back:
    // the echo's writer on the first node runs out of credit, then so
    // does the second node's writer.
    let (_mem, a, b, _) = pair().await;
    let (_r, _) = register(&a, "echo");
    until(&b, added("echo")).await;
    assert_eq!((only(&a).credit_stalls, only(&b).credit_stalls), (0, 0));
    let e = b.kernel().registry().lookup("echo").unwrap();
    let (mine, theirs) = b.kernel().duplex();
    e.endpoint().open_pipe("echo", theirs).await.unwrap();
    let (mut reader, writer) = mine.split();
    let frame = Bytes::from(vec![5u8; 64 * 1024]);
    let frames = 64;
    let sending = {
        let frame = frame.clone();
        tokio::spawn(async move {
            for _ in 0..frames {
                writer.send(frame.clone()).await.unwrap();
            }
        })
    };
    eventually("credit stalls on both sides", || {
        only(&a).credit_stalls > 0 && only(&b).credit_stalls > 0
    })
    .await;
    // Once read, everything comes back.
    for _ in 0..frames {
        let got = tokio::time::timeout(Duration::from_secs(10), reader.recv())
            .await
            .expect("the pipe stalled")
            .unwrap();
        assert_eq!(got.len(), frame.len());
    }
    sending.await.unwrap();
}

/// A server whose every answer is [`BIG`] bytes long.
#[derive(Debug)]
struct Big;

/// How long [`Big`]'s answers are.
const BIG: usize = 32 * 1024;

#[async_trait]
impl Endpoint for Big {
    fn try_cast(&self, _msg: Bytes) -> Result<(), Error> {
        Ok(())
    }

    async fn call(&self, _msg: Bytes) -> Result<Bytes, Error> {
        Ok(Bytes::from(vec![b'b'; BIG]))
    }

    async fn open_pipe(&self, _port: &str, _end: PipeEnd) -> Result<(), Error> {
        Err(Error::PipeClosed)
    }
}

/// Write everything `session` has to send on `sock`.
async fn write_out(session: &mut Session, sock: &mut TcpStream) {
    use tokio::io::AsyncWriteExt;
    while let Some(out) = session.poll_transmit(std::time::Instant::now()) {
        tokio::time::timeout(Duration::from_secs(10), sock.write_all(&out))
            .await
            .expect("the node reads")
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_closes_and_drops_its_socket_at_once_is_counted_as_closing() {
    // A bare peer on a real socket makes the node queue far more replies
    // than it reads (the node stops reading it: over its budget), then
    // closes its session and drops its socket at once. The node's next
    // write fails, but the peer's Close came before: the session ends
    // with the Close, counted as the peer's.
    for round in 0..5 {
        let mut t = Transports::new();
        t.add(Arc::new(Tcp));
        let budget = 64 * 1024;
        let a = Node::with_config(
            Kernel::new(),
            t,
            NodeConfig {
                link_budget: budget,
                // Every call served: their replies queue.
                max_serving: 1024,
                keepalive: Duration::from_secs(1),
                idle_timeout: Duration::from_secs(10),
                ..config()
            },
        );
        let _big = a
            .kernel()
            .registry()
            .register("big", crate::Capabilities::new(), Arc::new(Big))
            .unwrap();
        let at = a
            .listen(&"tcp://127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        // Little room for the node's writes: they back up in its session.
        sock.set_recv_buffer_size(4096).unwrap();
        let mut sock = sock.connect(at.authority().parse().unwrap()).await.unwrap();
        // The Close leaves at once (not held back by Nagle's algorithm
        // behind a segment not yet acknowledged, and lost with the socket).
        sock.set_nodelay(true).unwrap();
        let me = NodeId::random();
        let mut peer = Session::new(
            wire::Config::new(wire::FramingKind::ReliableStream),
            wire::LocalInfo::new(me),
            std::time::Instant::now(),
        )
        .unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let mut buf = vec![0u8; 64 * 1024];
        while !peer.is_connected() {
            assert!(tokio::time::Instant::now() < deadline, "no handshake");
            write_out(&mut peer, &mut sock).await;
            let read = tokio::time::timeout(
                Duration::from_millis(50),
                tokio::io::AsyncReadExt::read(&mut sock, &mut buf),
            )
            .await;
            if let Ok(Ok(n)) = read {
                peer.handle_input(std::time::Instant::now(), &buf[..n]);
            }
        }
        // Far more than the socket buffers hold (up to 4 MiB on Linux).
        for _ in 0..200 {
            peer.call("big", Bytes::from_static(b"?")).unwrap();
        }
        write_out(&mut peer, &mut sock).await;
        // Read no more: the replies back up in the node, beyond its
        // budget.
        eventually("the node's replies back up", || {
            let l = a.links();
            l.first()
                .is_some_and(|l| l.send_queue_bytes > 2 * budget as u64)
        })
        .await;
        peer.close("done");
        write_out(&mut peer, &mut sock).await;
        drop(sock);
        eventually("the link ends", || a.links().is_empty()).await;
        let closes = a.link_closes();
        let counted = closes.iter().find(|c| c.peer == Some(me));
        assert_eq!(
            counted.map(|c| c.received[wire::CloseCode::Normal.index()]),
            Some(1),
            "round {round}: the peer's Close is not counted: {closes:?}"
        );
        a.shutdown();
    }
}
