//! Links and routes through the C API, driven from Rust through its C
//! symbols: nodes linked over real TCP sockets, their links and counters
//! listed, routes through a middle node, a link closed; and every misuse
//! (NULL pointers, arrays too small, unknown link ids) answered with a
//! clear error code.
#![allow(unsafe_code)]

use std::ffi::{CStr, c_char};
use std::mem::MaybeUninit;
use std::ptr;
use std::time::{Duration, Instant};

use oscloud::*;

mod common;
use common::echo;

/// An owned node, dropped at the end of the test.
struct Node(*mut OscloudNode);

impl Node {
    fn new() -> Self {
        let mut node = ptr::null_mut();
        assert_eq!(
            unsafe { oscloud_node_new(ptr::null(), &mut node) },
            OSCLOUD_OK
        );
        Self(node)
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
