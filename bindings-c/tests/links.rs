//! Links and routes through the C API, driven from Rust through its C
//! symbols: nodes linked over real TCP sockets, their links and counters
//! listed, routes through a middle node, a link closed, a link's health
//! (round trip, then how its session closed when its peer went quiet); and
//! every misuse
//! (NULL pointers, arrays too small, unknown link ids) answered with a
//! clear error code.
#![allow(unsafe_code)]

use std::ffi::{CStr, c_char};
use std::io::{Read, Write};
use std::mem::MaybeUninit;
use std::net::{TcpListener, TcpStream};
use std::ptr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use oscloud::*;

mod common;
use common::echo;

/// An owned node, dropped at the end of the test.
struct Node(*mut OscloudNode);

impl Node {
    fn new() -> Self {
        Self::with_config(None)
    }

    /// A node with these node settings (`NodeConfig::apply`).
    fn with_config(config: Option<&CStr>) -> Self {
        let mut options = oscloud_node_options_default();
        if let Some(c) = config {
            options.config = c.as_ptr();
        }
        let mut node = ptr::null_mut();
        assert_eq!(
            unsafe { oscloud_node_new(&options, &mut node) },
            OSCLOUD_OK,
            "{}",
            last_error()
        );
        Self(node)
    }

    fn health(&self, id: u64) -> Option<OscloudLinkHealth> {
        let mut h = MaybeUninit::<OscloudLinkHealth>::uninit();
        let rc = unsafe {
            oscloud_node_link_health(self.0, id, h.as_mut_ptr(), size_of::<OscloudLinkHealth>())
        };
        // SAFETY: written whole when it succeeds.
        (rc == OSCLOUD_OK).then(|| unsafe { h.assume_init() })
    }

    fn id(&self) -> String {
        let mut buf = [0 as c_char; 33];
        assert_eq!(
            unsafe { oscloud_node_id(self.0, buf.as_mut_ptr(), buf.len()) },
            OSCLOUD_OK
        );
        text(&buf)
    }

    /// Listen on a free TCP port; the address bound.
    fn listen(&self) -> String {
        let mut at = [0 as c_char; 128];
        assert_eq!(
            unsafe {
                oscloud_node_listen(
                    self.0,
                    c"tcp://127.0.0.1:0".as_ptr(),
                    at.as_mut_ptr(),
                    at.len(),
                )
            },
            OSCLOUD_OK
        );
        text(&at)
    }

    fn connect(&self, at: &str) {
        let at = std::ffi::CString::new(at).expect("no NUL");
        assert_eq!(
            unsafe { oscloud_node_connect(self.0, at.as_ptr(), 5000) },
            OSCLOUD_OK,
            "{}",
            last_error()
        );
    }

    fn serve(&self, name: &CStr) -> *mut OscloudServer {
        let mut cb = oscloud_server_callbacks_default();
        cb.on_call = Some(echo);
        let mut server = ptr::null_mut();
        assert_eq!(
            unsafe { oscloud_server_register(self.0, name.as_ptr(), &cb, &mut server) },
            OSCLOUD_OK
        );
        server
    }

    fn wait_for(&self, name: &CStr) {
        assert_eq!(
            unsafe { oscloud_node_wait_for(self.0, name.as_ptr(), 5000) },
            OSCLOUD_OK,
            "{name:?} did not appear"
        );
    }

    fn links(&self) -> Vec<OscloudLink> {
        let mut out: [MaybeUninit<OscloudLink>; 8] = [const { MaybeUninit::uninit() }; 8];
        let mut len = usize::MAX;
        let rc = unsafe { oscloud_node_links(self.0, out[0].as_mut_ptr(), out.len(), &mut len) };
        assert_eq!(rc, OSCLOUD_OK, "{}", last_error());
        assert!(len <= out.len());
        // SAFETY: the first `len` were written.
        out[..len]
            .iter()
            .map(|l| unsafe { l.assume_init() })
            .collect()
    }

    fn routes(&self) -> Vec<OscloudRoute> {
        let mut out: [MaybeUninit<OscloudRoute>; 8] = [const { MaybeUninit::uninit() }; 8];
        let mut len = usize::MAX;
        let rc = unsafe { oscloud_node_routes(self.0, out[0].as_mut_ptr(), out.len(), &mut len) };
        assert_eq!(rc, OSCLOUD_OK, "{}", last_error());
        assert!(len <= out.len());
        // SAFETY: the first `len` were written.
        out[..len]
            .iter()
            .map(|r| unsafe { r.assume_init() })
            .collect()
    }

    fn call(&self, name: &CStr) -> i32 {
        unsafe {
            oscloud_call(
                self.0,
                name.as_ptr(),
                b"\xa2hi".as_ptr(),
                3,
                5000,
                ptr::null_mut(),
            )
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        unsafe { oscloud_node_drop(&mut self.0) };
    }
}

fn text(buf: &[c_char]) -> String {
    let bytes: Vec<u8> = buf
        .iter()
        .take_while(|c| **c != 0)
        .map(|c| *c as u8)
        .collect();
    String::from_utf8(bytes).expect("UTF-8")
}

fn last_error() -> String {
    unsafe { CStr::from_ptr(oscloud_last_error()) }
        .to_string_lossy()
        .into_owned()
}

/// Poll `cond` every 5 ms until it holds; fail after 5 s.
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn null_pointers_are_refused() {
    let node = Node::new();
    let mut len = 0usize;
    let mut link = MaybeUninit::<OscloudLink>::uninit();
    let mut route = MaybeUninit::<OscloudRoute>::uninit();
    unsafe {
        assert_eq!(
            oscloud_node_links(ptr::null(), link.as_mut_ptr(), 1, &mut len),
            OSCLOUD_ERR_NULL
        );
        assert!(last_error().contains("node"));
        assert_eq!(
            oscloud_node_links(node.0, link.as_mut_ptr(), 1, ptr::null_mut()),
            OSCLOUD_ERR_NULL
        );
        assert!(last_error().contains("len"));
        assert_eq!(
            oscloud_node_links(node.0, ptr::null_mut(), 1, &mut len),
            OSCLOUD_ERR_NULL
        );
        assert!(last_error().contains("out"));
        assert_eq!(
            oscloud_node_routes(ptr::null(), route.as_mut_ptr(), 1, &mut len),
            OSCLOUD_ERR_NULL
        );
        assert_eq!(
            oscloud_node_routes(node.0, route.as_mut_ptr(), 1, ptr::null_mut()),
            OSCLOUD_ERR_NULL
        );
        assert_eq!(
            oscloud_node_routes(node.0, ptr::null_mut(), 1, &mut len),
            OSCLOUD_ERR_NULL
        );
        assert_eq!(oscloud_node_close_link(ptr::null(), 1), OSCLOUD_ERR_NULL);
    }
}

#[test]
fn an_unlinked_node_has_no_links_nor_routes() {
    let node = Node::new();
    let mut len = usize::MAX;
    // NULL with a capacity of 0 counts.
    assert_eq!(
        unsafe { oscloud_node_links(node.0, ptr::null_mut(), 0, &mut len) },
        OSCLOUD_OK
    );
    assert_eq!(len, 0);
    len = usize::MAX;
    assert_eq!(
        unsafe { oscloud_node_routes(node.0, ptr::null_mut(), 0, &mut len) },
        OSCLOUD_OK
    );
    assert_eq!(len, 0);
    assert_eq!(
        unsafe { oscloud_node_close_link(node.0, 1) },
        OSCLOUD_ERR_NOT_FOUND
    );
    assert!(last_error().contains("no link 1"), "{}", last_error());
}

#[test]
fn two_nodes_over_tcp_see_their_link_and_its_counters_move() {
    let (a, b) = (Node::new(), Node::new());
    let mut server = a.serve(c"echo");
    let at = a.listen();
    b.connect(&at);
    b.wait_for(c"echo");

    // A small array: the error says so, the count is right, and only the
    // room given is written.
    let mut len = 0usize;
    assert_eq!(
        unsafe { oscloud_node_links(b.0, ptr::null_mut(), 0, &mut len) },
        OSCLOUD_ERR_INVALID
    );
    assert_eq!(len, 1);
    assert!(
        last_error().contains("room for 0 links"),
        "{}",
        last_error()
    );

    // Both ends show the link up with its peer as soon as b sees a's
    // servers (each side marks it before it shares or learns servers).
    let up = |n: &Node| {
        let l = n.links();
        l.len() == 1 && l[0].connected && l[0].peer[0] != 0
    };
    assert!(up(&a) && up(&b), "a: {:?}, b: {:?}", a.links(), b.links());
    let (bl, al) = (b.links()[0], a.links()[0]);
    assert_eq!(text(&bl.peer), a.id());
    assert_eq!(text(&al.peer), b.id());
    assert_eq!(text(&bl.dialed), at);
    assert_eq!(text(&al.dialed), "", "a accepted the link");
    assert_eq!(text(&bl.remote), text(&al.local));
    assert_eq!(bl.reconnects, 0);
    assert!(bl.stats.frames_sent > 0 && bl.stats.bytes_received > 0);
    assert_eq!(bl.stats.crc_failures + bl.stats.auth_failures, 0);

    // A call moves the counters on both sides, by the time it returns.
    assert_eq!(b.call(c"echo"), OSCLOUD_OK, "{}", last_error());
    let s = b.links()[0].stats;
    assert!(
        s.payload_bytes_sent >= bl.stats.payload_bytes_sent + 3
            && s.payload_bytes_received >= bl.stats.payload_bytes_received + 3
            && s.bytes_sent > bl.stats.bytes_sent
            && s.bytes_received > bl.stats.bytes_received,
        "b's counters do not show the call: {s:?}"
    );
    let s = a.links()[0].stats;
    assert!(
        s.payload_bytes_received >= al.stats.payload_bytes_received + 3
            && s.payload_bytes_sent >= al.stats.payload_bytes_sent + 3,
        "a's counters do not show the call: {s:?}"
    );

    // b's one route: a's server, one hop over the link, in use.
    let routes = b.routes();
    assert_eq!(routes.len(), 1);
    let r = routes[0];
    assert_eq!(text(&r.name), "echo");
    assert_eq!(text(&r.node), a.id());
    assert_eq!(text(&r.via), a.id());
    assert_eq!((r.hops, r.cost, r.link, r.best), (1, 1, bl.id, true));
    let mut one = MaybeUninit::<OscloudRoute>::uninit();
    len = 0;
    assert_eq!(
        unsafe { oscloud_node_routes(a.0, one.as_mut_ptr(), 1, &mut len) },
        OSCLOUD_OK
    );
    assert_eq!(len, 0, "a has no remote servers");

    // Closing the link (from the dialling side: for good).
    assert_eq!(
        unsafe { oscloud_node_close_link(b.0, bl.id + 1000) },
        OSCLOUD_ERR_NOT_FOUND
    );
    assert_eq!(
        unsafe { oscloud_node_close_link(b.0, bl.id) },
        OSCLOUD_OK,
        "{}",
        last_error()
    );
    wait_until("b's link is gone", || b.links().is_empty());
    wait_until("a's link is gone", || a.links().is_empty());
    wait_until("b's routes are gone", || b.routes().is_empty());
    assert_eq!(b.call(c"echo"), OSCLOUD_ERR_NOT_FOUND);
    assert_eq!(
        unsafe { oscloud_node_close_link(b.0, bl.id) },
        OSCLOUD_ERR_NOT_FOUND
    );
    unsafe { oscloud_server_drop(&mut server) };
}

#[test]
fn a_chain_shows_the_far_server_through_the_middle_node() {
    // a — b — c over TCP: a reaches c's server through b.
    let (a, b, c) = (Node::new(), Node::new(), Node::new());
    let mut far = c.serve(c"far");
    let mut near = b.serve(c"near");
    let b_at = b.listen();
    let c_at = c.listen();
    b.connect(&c_at);
    a.connect(&b_at);
    a.wait_for(c"far");
    a.wait_for(c"near");
    assert_eq!(a.call(c"far"), OSCLOUD_OK, "{}", last_error());

    let link = a.links()[0];
    let routes = a.routes();
    assert_eq!(routes.len(), 2, "one route per server");
    let (far_r, near_r) = (routes[0], routes[1]);
    assert_eq!(text(&far_r.name), "far");
    assert_eq!(text(&far_r.node), c.id());
    assert_eq!(text(&far_r.via), b.id());
    assert_eq!(
        (far_r.hops, far_r.cost, far_r.link, far_r.best),
        (2, 2, link.id, true)
    );
    assert_eq!(text(&near_r.name), "near");
    assert_eq!(text(&near_r.node), b.id());
    assert_eq!((near_r.hops, near_r.cost, near_r.best), (1, 1, true));

    // Too small an array: the first route is written, the count is right.
    let mut one = MaybeUninit::<OscloudRoute>::uninit();
    let mut len = 0usize;
    assert_eq!(
        unsafe { oscloud_node_routes(a.0, one.as_mut_ptr(), 1, &mut len) },
        OSCLOUD_ERR_INVALID
    );
    assert_eq!(len, 2);
    assert_eq!(text(&unsafe { one.assume_init() }.name), "far");

    unsafe { oscloud_server_drop(&mut far) };
    unsafe { oscloud_server_drop(&mut near) };
}

/// A TCP proxy for one connection: it forwards both ways until `freeze`
/// is set, then swallows everything and answers nothing while it keeps
/// both sockets open (a peer gone quiet). It accepts no second connection.
fn quiet_proxy(to: &str) -> (String, Arc<AtomicBool>) {
    let target = to
        .strip_prefix("tcp://")
        .expect("a tcp:// address")
        .to_owned();
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let at = format!("tcp://{}", listener.local_addr().expect("address"));
    let freeze = Arc::new(AtomicBool::new(false));
    let frozen = freeze.clone();
    std::thread::spawn(move || {
        let Ok((inbound, _)) = listener.accept() else {
            return;
        };
        drop(listener);
        let Ok(outbound) = TcpStream::connect(&target) else {
            return;
        };
        let pump = |mut from: TcpStream, mut to: TcpStream, frozen: Arc<AtomicBool>| {
            std::thread::spawn(move || {
                let mut buf = [0u8; 16 * 1024];
                while let Ok(n @ 1..) = from.read(&mut buf) {
                    if !frozen.load(Ordering::SeqCst) && to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            })
        };
        let (i2, o2) = (
            inbound.try_clone().expect("clone"),
            outbound.try_clone().expect("clone"),
        );
        let up = pump(inbound, outbound, frozen.clone());
        let down = pump(o2, i2, frozen);
        let _ = (up.join(), down.join());
    });
    (at, freeze)
}

#[test]
fn a_link_shows_its_round_trip_and_then_how_its_session_closed() {
    let a = Node::new();
    let mut server = a.serve(c"echo");
    let (through, freeze) = quiet_proxy(&a.listen());
    // b gives up on a peer silent for 600 ms (a pings every 100 ms).
    let b = Node::with_config(Some(c"keepalive=100ms, idle_timeout=600ms"));
    b.connect(&through);
    b.wait_for(c"echo");
    assert_eq!(b.call(c"echo"), OSCLOUD_OK, "{}", last_error());
    let id = b.links()[0].id;

    // Up: its round trip measured by the probe, nothing stalled or closed.
    wait_until("b measured the round trip", || {
        b.health(id).is_some_and(|h| h.rtt_us > 0)
    });
    let h = b.health(id).expect("the link");
    assert_eq!(h.id, id);
    assert!(h.rtt_us < 5_000_000, "{}", h.rtt_us);
    let p = h.probe_rtt;
    assert!(p.count >= 1 && p.sum_us > 0, "{p:?}");
    assert_eq!(p.buckets.iter().sum::<u64>(), p.count);
    assert_eq!(p.bounds_ns, oscloud_core::endpoint::LATENCY_BUCKETS_NS);
    assert_eq!(h.session_rtt.count, 0, "TCP times nothing itself");
    assert_eq!(h.credit_stalls, 0);
    assert!(!h.closed && !h.close_remote && h.close_code == 0);
    assert_eq!(h.close_message[0], 0);
    assert!(b.health(id + 1000).is_none());

    // The peer goes quiet: b's session times out; the link, which b
    // dials, stays listed (the proxy takes no new connection) with how
    // its session closed.
    freeze.store(true, Ordering::SeqCst);
    wait_until("b's link shows its session closed", || {
        b.health(id).is_some_and(|h| h.closed)
    });
    let h = b.health(id).expect("the link");
    assert_eq!(h.close_code, 9, "IdleTimeout");
    assert!(!h.close_remote, "b closed it");
    let message = text(&h.close_message);
    assert!(!message.is_empty());
    assert!(!b.links()[0].connected);
    unsafe { oscloud_server_drop(&mut server) };
}
