//! What a node allocates per cast it receives from a linked node: the
//! receive path (reading the link, the session decoding the packet, the
//! driver finding the server, the server's mailbox, the actor handling
//! it) counted by a global allocator on the receiving node's threads
//! only. The sending node runs on threads of its own, which are not
//! counted.
//!
//! The count is per cast, averaged over many: what the receive path
//! allocates for each cast, not a block now and then (a channel's block
//! of 32 slots, a new receive buffer per 512 KiB). The figure is printed
//! (`--nocapture`) and in `BENCHMARKS.md`. One allocation per cast is
//! left: the boxed future of the server's `handle_cast` (`async_trait`).
//! The casts of one read reach the server as one batch, so what comes
//! with a batch comes once for many casts: ractor's boxed mailbox
//! message, the batch's list (`node/cast_batch.rs`), and the guard that
//! counts the batch against the link budget until the server is done with
//! it, with the block its small payloads are copied into
//! (`node/held_casts.rs`). The packet and the server's name are not
//! copied out of the receive buffer, and the server is found in the
//! registry without a list, once for the casts of a read to one server
//! (`node/cast_target.rs`).
#![allow(unsafe_code, clippy::unwrap_used, clippy::print_stdout)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use oscloud_actors::{Context, Server, ServerError, ServerRef};
use oscloud_core::transport::Transports;
use oscloud_core::{Kernel, Node, NodeConfig, RegistryEvent};
use oscloud_transport_tcp::TcpTransport;

/// Counts the allocations of the threads that ask to be counted.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static COUNTED: Cell<bool> = const { Cell::new(false) };
}

fn count() {
    if COUNTED.try_with(Cell::get).unwrap_or(false) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: every call goes to the system allocator unchanged; the count is
// a side effect.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: the caller's contract, passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Casts sent before counting (buffers and tables reach their size).
const WARM_UP: u64 = 5_000;
/// Casts counted.
const CASTS: u64 = 50_000;
/// The most the receiving node may allocate per cast, on average (see
/// above for the one, and what comes per batch): room for batches of
/// about five casts, which a receiver that keeps up with its sender reads
/// (about 1.03 is typical: the batches are large).
const MOST_PER_CAST: f64 = 1.75;

/// Counts casts; its request decodes without allocating.
struct Count(Arc<AtomicU64>);

#[async_trait]
impl Server for Count {
    type Request = (u64, u64);
    type Reply = u64;
    type State = ();

    async fn init(&self, _: &mut Context) -> Result<(), ServerError> {
        Ok(())
    }

    async fn handle_cast(
        &self,
        _: &mut Context,
        _: &mut (),
        _: (u64, u64),
    ) -> Result<(), ServerError> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn handle_call(
        &self,
        _: &mut Context,
        _: &mut (),
        _: (u64, u64),
    ) -> Result<u64, ServerError> {
        Ok(self.0.load(Ordering::Relaxed))
    }
}

fn transports() -> Transports {
    Transports::new().with(Arc::new(TcpTransport))
}

/// Send `n` casts and wait until the server counted `total`.
async fn cast(server: &ServerRef, counted: &AtomicU64, n: u64, total: u64) {
    let m = oscloud_actors::encode(&(7u64, 9u64)).unwrap();
    for _ in 0..n {
        server.cast(m.clone()).await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while counted.load(Ordering::Relaxed) < total {
        assert!(Instant::now() < deadline, "the casts did not all arrive");
        tokio::task::yield_now().await;
    }
}

#[test]
fn a_received_cast_costs_one_allocation() {
    // The receiving node: its own runtime, whose threads are counted.
    let receiver = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .on_thread_start(|| COUNTED.with(|c| c.set(true)))
        .enable_all()
        .build()
        .unwrap();
    let counted = Arc::new(AtomicU64::new(0));
    let (_recv_node, at) = receiver.block_on({
        let counted = counted.clone();
        async move {
            let k = Kernel::new();
            oscloud_actors::start(&k, "count", Count(counted))
                .await
                .unwrap();
            let n = Node::with_config(k, transports(), NodeConfig::default());
            let at = n
                .listen(&"tcp://127.0.0.1:0".parse().unwrap())
                .await
                .unwrap();
            (n, at)
        }
    });
    // The sending node, on threads not counted.
    let sender = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    sender.block_on(async move {
        let k = Kernel::new();
        let n = Node::with_config(k.clone(), transports(), NodeConfig::default());
        let mut watch = k.registry().watch();
        n.connect(&at).await.unwrap();
        while let Some(ev) = watch.next().await {
            if matches!(&ev, RegistryEvent::Added(e) if e.name() == "count") {
                break;
            }
        }
        let server = ServerRef::new(&k, "count");
        cast(&server, &counted, WARM_UP, WARM_UP).await;
        let before = ALLOCATIONS.load(Ordering::Relaxed);
        cast(&server, &counted, CASTS, WARM_UP + CASTS).await;
        let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;
        let per_cast = allocations as f64 / CASTS as f64;
        println!(
            "receiving node: {allocations} allocations for {CASTS} casts, {per_cast:.3} per cast"
        );
        assert!(
            per_cast <= MOST_PER_CAST,
            "{per_cast:.3} allocations per received cast (at most {MOST_PER_CAST})"
        );
        drop(n);
    });
}
