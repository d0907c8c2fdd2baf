//! What a hub holds per route: the heap bytes of its route table, its
//! registry entries and what each link's driver remembers it announced,
//! for a star of `N` neighbours with `S` servers each, fed as the drivers
//! feed them (every neighbour announces its own servers, every link then
//! takes the hub's exports to it).
//!
//! Bytes are counted by a global allocator on the test's thread only
//! (live bytes: allocated less freed), so the figure does not depend on
//! the machine or on other tests running at the same time. The figures
//! are printed (`--nocapture`) and in `BENCHMARKS.md` ("Mesh: memory per
//! route"); the test checks that the part that does not depend on `N`
//! stays so, and that what each link adds per route is a few dozen
//! bytes, not a copy of the route.
#![allow(unsafe_code, clippy::print_stdout)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use super::router::Router;
use super::routes::Hop;
use crate::wire::{EntryInfo, RouteInfo};
use crate::{Capabilities, Endpoint, Error, NodeId, PipeEnd, PortDirection, Registry};

/// Counts the live heap bytes of the threads that ask to be counted.
struct Counting;

thread_local! {
    static COUNTED: Cell<bool> = const { Cell::new(false) };
    static LIVE: Cell<isize> = const { Cell::new(0) };
}

fn add(bytes: isize) {
    if COUNTED.try_with(Cell::get).unwrap_or(false) {
        let _ = LIVE.try_with(|l| l.set(l.get() + bytes));
    }
}

fn size(layout: Layout) -> isize {
    isize::try_from(layout.size()).unwrap_or(isize::MAX)
}

// SAFETY: every call goes to the system allocator unchanged; the count is
// a side effect.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        add(size(layout));
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        add(-size(layout));
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        add(size(layout));
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        add(isize::try_from(new_size).unwrap_or(isize::MAX) - size(layout));
        // SAFETY: the caller's contract, passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Live bytes allocated by this thread while `f` runs (what it built and
/// handed back), with what it returned.
fn live_bytes<R>(f: impl FnOnce() -> R) -> (isize, R) {
    let before = LIVE.with(Cell::get);
    COUNTED.with(|c| c.set(true));
    let out = f();
    COUNTED.with(|c| c.set(false));
    (LIVE.with(Cell::get) - before, out)
}

/// The endpoint of a server on a neighbour, as the driver's
/// `RemoteEndpoint` holds it: the name to send to and the neighbour.
#[derive(Debug)]
struct Remote {
    #[allow(dead_code)]
    name: Arc<str>,
    #[allow(dead_code)]
    node: NodeId,
}

#[async_trait]
impl Endpoint for Remote {
    fn try_cast(&self, _msg: Bytes) -> Result<(), Error> {
        Ok(())
    }

    async fn call(&self, msg: Bytes) -> Result<Bytes, Error> {
        Ok(msg)
    }

    async fn open_pipe(&self, _port: &str, _end: PipeEnd) -> Result<(), Error> {
        Ok(())
    }
}

fn node(i: usize) -> NodeId {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
    NodeId::from_bytes(b)
}

/// What the hub holds, in bytes per route (`n * s` routes).
struct Figures {
    /// The route table and the registry entries.
    routes: f64,
    /// What the links' drivers remember they announced.
    announced: f64,
}

/// A hub with `n` neighbours announcing `s` servers each.
fn hub(n: usize, s: usize) -> Figures {
    let me = node(0);
    let registry = Registry::new(me);
    let router = Router::new(registry.clone(), 8);
    let routes = n * s;
    let (table_bytes, ()) = live_bytes(|| {
        for link in 1..=n {
            let peer = node(link);
            let hop = Hop {
                link: link as u64,
                peer,
                cost: 1,
                pipe_window: 64 * 1024,
            };
            for id in 1..=s as u64 {
                // As the decoder makes them.
                let info = EntryInfo {
                    id,
                    name: format!("sensor-{link}-{id}").into(),
                    capabilities: Capabilities::new()
                        .accepts("reading")
                        .port("in", PortDirection::In)
                        .into(),
                    group: false,
                };
                let route = RouteInfo {
                    origin_id: id,
                    path: vec![peer].into(),
                    cost: 0,
                    pipe_frame: None,
                };
                let endpoint = Arc::new(Remote {
                    name: info.name.clone(),
                    node: peer,
                });
                router.learn(hop, info, route, endpoint);
            }
        }
    });
    assert_eq!(registry.entries().len(), routes);
    // Each link's driver keeps what it announced, by entry id.
    let (announced_bytes, exported) = live_bytes(|| {
        (1..=n)
            .map(|link| {
                let mut exported: HashMap<u64, u64> = HashMap::new();
                for e in router.exports(link as u64, node(link)) {
                    exported.insert(e.id, e.version);
                }
                exported
            })
            .collect::<Vec<_>>()
    });
    assert_eq!(
        exported.iter().map(HashMap::len).sum::<usize>(),
        (n - 1) * routes
    );
    Figures {
        routes: table_bytes as f64 / routes as f64,
        announced: announced_bytes as f64 / routes as f64,
    }
}

#[test]
fn hub_memory_per_route() {
    const SERVERS: usize = 20;
    println!(
        "| neighbours N | routes | table + registry, B/route | announced, B/route | per link, B/route |"
    );
    println!("|---|---|---|---|---|");
    let mut table = Vec::new();
    for n in [5, 50, 200] {
        let f = hub(n, SERVERS);
        let per_link = f.announced / (n - 1) as f64;
        println!(
            "| {n} | {} | {:.0} | {:.0} | {per_link:.0} |",
            n * SERVERS,
            f.routes,
            f.announced
        );
        table.push((f, per_link));
    }
    for (f, per_link) in &table {
        assert!(
            f.routes < table[0].0.routes * 1.5,
            "the route table and registry grow per route with the number of neighbours"
        );
        assert!(
            f.routes < 2048.0,
            "the route table and registry hold {:.0} bytes per route",
            f.routes
        );
        assert!(
            *per_link < 64.0,
            "a link remembers {per_link:.0} bytes per route it announced"
        );
    }
}
