//! Encrypted, authenticated links between real nodes (TCP, Unix, mem),
//! admission by allow-list, pre-shared keys, a tampering man in the middle,
//! a replayed capture, and per-server access control.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use oscloud_actors::{Context, PipeOutcome, Server, ServerError, ServerRef, async_trait};
use oscloud_core::access::AccessPolicy;
use oscloud_core::identity::{AllowList, NodeKey};
use oscloud_core::transport::{MemTransport, Transports};
use oscloud_core::wire::SecureConfig;
use oscloud_core::{Error, Kernel, Node, NodeConfig, PipeEnd};
use oscloud_transport_tcp::TcpTransport;
use oscloud_transport_unix::UnixTransport;
use oscloud_transport_ws::WsTransport;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

// ----- log capture (current-thread tests: every task logs here) -----

#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn install() -> (Self, tracing::subscriber::DefaultGuard) {
        let logs = Logs::default();
        let w = logs.clone();
        let sub = tracing_subscriber::fmt()
            .with_env_filter("info")
            .with_ansi(false)
            .with_writer(move || w.clone())
            .finish();
        let guard = tracing::subscriber::set_default(sub);
        (logs, guard)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

// ----- a server that records what reaches it and who sent it -----

type Seen = Arc<Mutex<Vec<Vec<u8>>>>;

struct Recorder(Seen);

#[async_trait]
impl Server for Recorder {
    type Request = Vec<u8>;
    /// The caller's node id and key, as the server sees them.
    type Reply = (Option<String>, Option<String>);
    type State = Vec<PipeEnd>;

    async fn init(&self, _ctx: &mut Context) -> Result<Vec<PipeEnd>, ServerError> {
        Ok(Vec::new())
    }
    async fn handle_cast(
        &self,
        _ctx: &mut Context,
        _st: &mut Vec<PipeEnd>,
        req: Vec<u8>,
    ) -> Result<(), ServerError> {
        self.0.lock().unwrap().push(req);
        Ok(())
    }
    async fn handle_call(
        &self,
        ctx: &mut Context,
        _st: &mut Vec<PipeEnd>,
        req: Vec<u8>,
    ) -> Result<Self::Reply, ServerError> {
        self.0.lock().unwrap().push(req);
        let c = ctx.caller();
        Ok((
            c.map(|c| c.node.to_string()),
            c.and_then(|c| c.key).map(|k| k.to_string()),
        ))
    }
    async fn handle_pipe(
        &self,
        _ctx: &mut Context,
        st: &mut Vec<PipeEnd>,
        _port: String,
        end: PipeEnd,
    ) -> Result<PipeOutcome, ServerError> {
        st.push(end);
        Ok(PipeOutcome::Accepted)
    }
}

async fn recorder(node: &Node, name: &str) -> Seen {
    let seen = Seen::default();
    oscloud_actors::start(node.kernel(), name, Recorder(seen.clone()))
        .await
        .unwrap();
    seen
}

// ----- nodes -----

fn transports(mem: &MemTransport) -> Transports {
    let mut t = Transports::new();
    t.add(Arc::new(TcpTransport));
    t.add(Arc::new(WsTransport::ws()));
    t.add(Arc::new(UnixTransport));
    t.add(Arc::new(mem.clone()));
    t
}

fn fast() -> NodeConfig {
    NodeConfig {
        idle_timeout: Duration::from_secs(3),
        keepalive: Duration::from_millis(500),
        ..NodeConfig::default()
    }
}

fn secure_node(key: &NodeKey, allow: AllowList, psk: Option<[u8; 32]>, mem: &MemTransport) -> Node {
    let mut sc = SecureConfig::new(key.clone(), allow);
    sc.psk = psk;
    Node::with_security(
        Kernel::with_node(key.node_id()),
        transports(mem),
        fast(),
        sc,
    )
    .unwrap()
}

/// Two nodes admitting each other.
fn secure_pair(mem: &MemTransport) -> (Node, Node, NodeKey, NodeKey) {
    let (ka, kb) = (NodeKey::generate(), NodeKey::generate());
    let a = secure_node(&ka, AllowList::from_keys([kb.public()]), None, mem);
    let b = secure_node(&kb, AllowList::from_keys([ka.public()]), None, mem);
    (a, b, ka, kb)
}

async fn until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn lookup(node: &Node, name: &str) -> ServerRef {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Ok(r) = ServerRef::lookup(node.kernel(), name) {
            return r;
        }
        assert!(Instant::now() < deadline, "{name} never became visible");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

type Who = (Option<String>, Option<String>);

async fn call(r: &ServerRef, payload: &[u8]) -> Result<Who, oscloud_actors::Error> {
    r.clone()
        .typed::<Vec<u8>, Who>()
        .call(&payload.to_vec(), Duration::from_secs(3))
        .await
}

// ----- handshake, admission, PSK -----

#[tokio::test(flavor = "current_thread")]
async fn encrypted_links_over_tcp_ws_unix_and_mem_carry_the_callers_identity() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("a.sock");
    for addr in [
        "tcp://127.0.0.1:0".to_owned(),
        "ws://127.0.0.1:0/oscloud".to_owned(),
        format!("unix://{}", sock.display()),
        "mem://secure-a".to_owned(),
    ] {
        let mem = MemTransport::new();
        let (a, b, ka, kb) = secure_pair(&mem);
        let seen = recorder(&a, "who").await;
        let at = a.listen(&addr.parse().unwrap()).await.unwrap();
        assert_eq!(b.connect(&at).await.unwrap(), ka.node_id());
        let who = lookup(&b, "who").await;
        let (node, key) = call(&who, b"hi").await.unwrap();
        assert_eq!(node, Some(kb.node_id().to_string()), "{addr}");
        assert_eq!(key, Some(kb.public().to_string()), "{addr}");
        assert_eq!(seen.lock().unwrap().as_slice(), &[b"hi".to_vec()]);
        // Pipes work over the encrypted link too.
        let end = who.open_pipe("in").await.unwrap();
        end.send(Bytes::from(vec![1u8; 100_000])).await.unwrap();
        let link = b.links().into_iter().next().unwrap();
        assert!(link.connected && link.peer == Some(ka.node_id()));
        assert_eq!(link.stats.auth_failures, 0);
        a.shutdown();
        b.shutdown();
        let _ = std::fs::remove_file(&sock);
    }
}

#[tokio::test(flavor = "current_thread")]
async fn an_unknown_key_is_refused_with_a_log_line_on_both_sides() {
    let (logs, _guard) = Logs::install();
    let mem = MemTransport::new();
    let (ka, kb) = (NodeKey::generate(), NodeKey::generate());
    let stranger = NodeKey::generate().public();
    let a = secure_node(&ka, AllowList::from_keys([stranger]), None, &mem);
    let b = secure_node(&kb, AllowList::from_keys([ka.public()]), None, &mem);
    recorder(&a, "who").await;
    let at = a
        .listen(&"tcp://127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let err = b.connect(&at).await.unwrap_err();
    assert!(
        matches!(&err, Error::LinkFailed { reason, .. } if reason.contains("allow-list")),
        "{err}"
    );
    until("both log lines", 5, || {
        let t = logs.text();
        t.contains("link refused: key") && t.contains("link refused by the peer")
    })
    .await;
    assert!(ServerRef::lookup(b.kernel(), "who").is_err());
    // Reloading the allow-list admits it.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("allow");
    std::fs::write(&path, format!("{}  # b\n", kb.public())).unwrap();
    let list = AllowList::load(&path).unwrap();
    let a2 = secure_node(&ka, list.clone(), None, &mem);
    let at2 = a2
        .listen(&"tcp://127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    std::fs::write(&path, "# nobody\n").unwrap();
    list.reload().unwrap();
    assert!(b.connect(&at2).await.is_err());
    std::fs::write(&path, format!("{}\n", kb.public())).unwrap();
    list.reload().unwrap();
    assert_eq!(b.connect(&at2).await.unwrap(), ka.node_id());
}

#[tokio::test(flavor = "current_thread")]
async fn a_wrong_psk_or_a_plaintext_peer_is_refused() {
    let (logs, _guard) = Logs::install();
    let mem = MemTransport::new();
    let (ka, kb) = (NodeKey::generate(), NodeKey::generate());
    let a = secure_node(
        &ka,
        AllowList::from_keys([kb.public()]),
        Some([7; 32]),
        &mem,
    );
    let at = a
        .listen(&"tcp://127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let wrong = secure_node(
        &kb,
        AllowList::from_keys([ka.public()]),
        Some([8; 32]),
        &mem,
    );
    let err = wrong.connect(&at).await.unwrap_err();
    assert!(err.to_string().contains("pre-shared key"), "{err}");
    let right = secure_node(
        &kb,
        AllowList::from_keys([ka.public()]),
        Some([7; 32]),
        &mem,
    );
    assert_eq!(right.connect(&at).await.unwrap(), ka.node_id());
    let plain = Node::new(Kernel::new(), transports(&mem));
    let err = plain.connect(&at).await.unwrap_err();
    assert!(
        err.to_string().contains("encrypt"),
        "{err}\n{}",
        logs.text()
    );
}

// ----- a man in the middle -----

/// A TCP relay between a client and `target`. While `armed`, it flips one
/// bit in the next chunk going client → target; with `record`, it keeps
/// every byte going client → target.
struct Relay {
    addr: String,
    armed: Arc<AtomicBool>,
    flipped: Arc<AtomicBool>,
    record: Arc<Mutex<Vec<u8>>>,
}

async fn relay(target: String) -> Relay {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("tcp://{}", listener.local_addr().unwrap());
    let armed = Arc::new(AtomicBool::new(false));
    let flipped = Arc::new(AtomicBool::new(false));
    let record = Arc::new(Mutex::new(Vec::new()));
    let (a2, f2, r2) = (armed.clone(), flipped.clone(), record.clone());
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let server = TcpStream::connect(target.trim_start_matches("tcp://"))
                .await
                .unwrap();
            let (mut cr, mut cw) = client.into_split();
            let (mut sr, mut sw) = server.into_split();
            let (armed, flipped, record) = (a2.clone(), f2.clone(), r2.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n) = cr.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    if n > 24 && armed.swap(false, Ordering::SeqCst) {
                        // Inside the last frame's ciphertext or tag.
                        buf[n - 20] ^= 0x04;
                        flipped.store(true, Ordering::SeqCst);
                    }
                    record.lock().unwrap().extend_from_slice(&buf[..n]);
                    if sw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
                let _ = sw.shutdown().await;
            });
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut sr, &mut cw).await;
                let _ = cw.shutdown().await;
            });
        }
    });
    Relay {
        addr,
        armed,
        flipped,
        record,
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_flipped_ciphertext_bit_closes_the_link_and_never_delivers_data() {
    let (logs, _guard) = Logs::install();
    let mem = MemTransport::new();
    let (a, b, ka, _) = secure_pair(&mem);
    let seen = recorder(&a, "bank").await;
    let at = a
        .listen(&"tcp://127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let mitm = relay(at.to_string()).await;
    assert_eq!(
        b.connect(&mitm.addr.parse().unwrap()).await.unwrap(),
        ka.node_id()
    );
    let bank = lookup(&b, "bank").await;
    call(&bank, b"pay 1").await.unwrap();
    // Tamper with the next call in flight.
    mitm.armed.store(true, Ordering::SeqCst);
    let r = call(&bank, b"pay 2").await;
    assert!(mitm.flipped.load(Ordering::SeqCst));
    assert!(r.is_err(), "a tampered call must not be answered: {r:?}");
    until("the refusal in the log", 5, || {
        logs.text().contains("failed authentication")
    })
    .await;
    // Nothing corrupted (or the tampered call) reached the server.
    assert_eq!(seen.lock().unwrap().as_slice(), &[b"pay 1".to_vec()]);
    // The dialler links again by itself, and the link works.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let bank = lookup(&b, "bank").await;
        if call(&bank, b"pay 3").await.is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "no recovery");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        seen.lock().unwrap().as_slice(),
        &[b"pay 1".to_vec(), b"pay 3".to_vec()]
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_replayed_capture_is_refused() {
    let (logs, _guard) = Logs::install();
    let mem = MemTransport::new();
    let (a, b, _, _) = secure_pair(&mem);
    let seen = recorder(&a, "bank").await;
    let at = a
        .listen(&"tcp://127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let tap = relay(at.to_string()).await;
    b.connect(&tap.addr.parse().unwrap()).await.unwrap();
    let bank = lookup(&b, "bank").await;
    call(&bank, b"pay 100").await.unwrap();
    b.shutdown();
    let capture = tap.record.lock().unwrap().clone();
    assert!(capture.len() > 100);
    // Play the whole captured session to the node again.
    let mut s = TcpStream::connect(at.to_string().trim_start_matches("tcp://"))
        .await
        .unwrap();
    s.write_all(&capture).await.unwrap();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(n) = s.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    })
    .await
    .expect("the node did not close the replayed session");
    until("the refusal in the log", 5, || {
        let t = logs.text();
        t.contains("link refused") || t.contains("closing the link")
    })
    .await;
    assert_eq!(seen.lock().unwrap().as_slice(), &[b"pay 100".to_vec()]);
}

// ----- access control -----

#[tokio::test(flavor = "current_thread")]
async fn access_policy_allows_denies_and_hides() {
    access_policy("tcp://127.0.0.1:0").await;
}

#[tokio::test(flavor = "current_thread")]
async fn access_policy_allows_denies_and_hides_over_websocket() {
    access_policy("ws://127.0.0.1:0/oscloud").await;
}

async fn access_policy(listen: &str) {
    let mem = MemTransport::new();
    let (a, b, _, kb) = secure_pair(&mem);
    let stranger = NodeKey::generate().public();
    for name in ["open", "calc", "denied", "hidden", "mine"] {
        recorder(&a, name).await;
    }
    let policy = AccessPolicy::parse(&format!(
        "open all *\n\
         calc lookup,call {}\n\
         denied lookup *\n\
         hidden all {stranger}\n\
         mine lookup,call {}\n\
         default deny\n",
        kb.public(),
        kb.public().node_id()
    ))
    .unwrap();
    a.set_access_policy(&policy);
    let at = a.listen(&listen.parse().unwrap()).await.unwrap();
    b.connect(&at).await.unwrap();
    let kb = kb.public().to_string();

    // Allowed: call, with the caller's identity.
    let open = lookup(&b, "open").await;
    assert_eq!(call(&open, b"x").await.unwrap().1.as_deref(), Some(&kb[..]));
    let calc = lookup(&b, "calc").await;
    assert!(call(&calc, b"1+1").await.is_ok());
    assert!(call(&lookup(&b, "mine").await, b"by node id").await.is_ok());
    // Denied: a permission error for the caller.
    let denied = lookup(&b, "denied").await;
    let err = call(&denied, b"x").await.unwrap_err();
    assert!(
        matches!(
            err.as_core(),
            Some(Error::PermissionDenied { name, .. }) if name == "denied"
        ),
        "{err}"
    );
    // Pipes: allowed on "open", refused on "calc" (no pipe rule).
    let ok = open.open_pipe("in").await.unwrap();
    ok.send(Bytes::from_static(b"data")).await.unwrap();
    let mut refused = calc.open_pipe("in").await.unwrap();
    let end = tokio::time::timeout(Duration::from_secs(5), refused.recv())
        .await
        .unwrap();
    assert_eq!(end, None, "the refused pipe closes");
    // Hidden: never announced to b.
    assert!(ServerRef::lookup(b.kernel(), "hidden").is_err());

    // Reload: "hidden" becomes visible, "open" disappears.
    policy
        .set_text(&format!(
            "hidden all *\ncalc lookup,call {kb}\ndefault deny\n"
        ))
        .unwrap();
    a.set_access_policy(&policy);
    lookup(&b, "hidden").await;
    until("open withdrawn", 5, || {
        ServerRef::lookup(b.kernel(), "open").is_err()
    })
    .await;
    assert!(ServerRef::lookup(b.kernel(), "calc").is_ok());
}

#[tokio::test(flavor = "current_thread")]
async fn local_callers_have_no_caller_identity_and_are_not_checked() {
    let mem = MemTransport::new();
    let (a, _, _, _) = secure_pair(&mem);
    recorder(&a, "x").await;
    a.set_access_policy(&AccessPolicy::deny_all());
    let x = lookup(&a, "x").await;
    assert_eq!(call(&x, b"local").await.unwrap(), (None, None));
}

// ----- revoking a peer that is linked -----

#[tokio::test(flavor = "current_thread")]
async fn removing_a_key_from_the_allow_list_drops_the_live_link() {
    let (logs, _guard) = Logs::install();
    let mem = MemTransport::new();
    let (ka, kb, kc) = (
        NodeKey::generate(),
        NodeKey::generate(),
        NodeKey::generate(),
    );
    // a admits b and c; its list is a file, reloaded later.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("allow");
    std::fs::write(&path, format!("{} b\n{} c\n", kb.public(), kc.public())).unwrap();
    let list = AllowList::load(&path).unwrap();
    let a = secure_node(&ka, list.clone(), None, &mem);
    let b = secure_node(&kb, AllowList::from_keys([ka.public()]), None, &mem);
    let c = secure_node(&kc, AllowList::from_keys([ka.public()]), None, &mem);
    recorder(&a, "who").await;
    let at = a
        .listen(&"tcp://127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    b.connect(&at).await.unwrap();
    c.connect(&at).await.unwrap();
    call(&lookup(&b, "who").await, b"b1").await.unwrap();
    call(&lookup(&c, "who").await, b"c1").await.unwrap();
    let connected_to = |n: &Node, peer: oscloud_core::NodeId| {
        n.links()
            .iter()
            .any(|l| l.connected && l.peer == Some(peer))
    };

    // Through the API: b's key goes, b's live link drops; c's stays.
    list.remove(&kb.public());
    until("b's link dropped", 5, || {
        !connected_to(&a, kb.node_id()) && !connected_to(&b, ka.node_id())
    })
    .await;
    until("b sees who withdrawn", 5, || {
        ServerRef::lookup(b.kernel(), "who").is_err()
    })
    .await;
    until("both log lines", 5, || {
        let t = logs.text();
        t.contains(&format!(
            "link refused: key {}… (node {}) was removed from the allow-list",
            kb.public().short(),
            kb.node_id().short()
        )) && t.contains("link refused by the peer: key")
    })
    .await;
    assert!(connected_to(&a, kc.node_id()) && connected_to(&c, ka.node_id()));
    call(&lookup(&c, "who").await, b"c2").await.unwrap();
    // b keeps dialling and is refused: it never gets back in.
    let refused_before = logs.text().matches("link refused by the peer").count();
    until("b refused again on redial", 5, || {
        logs.text().matches("link refused by the peer").count() > refused_before
    })
    .await;
    assert!(!connected_to(&b, ka.node_id()));

    // Through the file: c goes, b comes back.
    std::fs::write(&path, format!("{} b\n", kb.public())).unwrap();
    list.reload().unwrap();
    until("c's link dropped", 5, || !connected_to(&a, kc.node_id())).await;
    until("b linked again by its own redialling", 10, || {
        connected_to(&b, ka.node_id())
    })
    .await;
    call(&lookup(&b, "who").await, b"b2").await.unwrap();
    assert!(!connected_to(&c, ka.node_id()));
    a.shutdown();
    b.shutdown();
    c.shutdown();
}
