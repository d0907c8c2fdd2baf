//! A TCP/Unix relay that applies [`Faults`] and can be cut, partitioned
//! and healed on command.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use oscloud_core::address::Address;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::{mpsc, watch};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::Error;
use crate::schedule::{FaultCounts, Faults, Rng, StreamFaults, derive};

type BoxRead = Box<dyn AsyncRead + Send + Unpin>;
type BoxWrite = Box<dyn AsyncWrite + Send + Unpin>;

/// Counters of a relay.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayStats {
    /// Connections accepted and joined to the target.
    pub connections: u64,
    /// Connections refused (partitioned, or the target was unreachable).
    pub refused: u64,
    /// Connections open now.
    pub open: u64,
    /// Times [`Relay::cut`] or [`Relay::partition`] closed connections.
    pub cuts: u64,
    /// Faults applied, both directions of every connection together.
    pub faults: FaultCounts,
}

struct Shared {
    faults: Faults,
    target: Address,
    /// New connections are refused while set.
    partitioned: AtomicBool,
    /// Bytes are held (not forwarded, not dropped) while set.
    blackhole: watch::Sender<bool>,
    conns: Mutex<HashMap<u64, Vec<AbortHandle>>>,
    next_conn: AtomicU64,
    stats: Mutex<RelayStats>,
    /// Connections joined so far (for waiting without sleeping).
    joined: watch::Sender<u64>,
}

/// A relay between the links of two oscloud nodes, with faults.
///
/// Nodes connect to [`Relay::address`] instead of the real address; each
/// connection is joined to the target and its bytes pass through a
/// [`StreamFaults`] engine per direction, seeded from the relay's seed and
/// the connection's number (the first connection is 0), then delayed by the
/// latency and the bandwidth cap. The same seed gives the same faults for
/// the same bytes.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use oscloud_faults::{Faults, Relay};
/// let target = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// let to = format!("tcp://{}", target.local_addr()?).parse()?;
/// let relay = Relay::start(&"tcp://127.0.0.1:0".parse()?, &to, Faults::seeded(1)).await?;
/// let client = tokio::net::TcpStream::connect(relay.address().authority()).await?;
/// let (_server, _) = target.accept().await?;
/// relay.wait_connections(1).await;
/// relay.cut(); // both sides see their stream close
/// # drop(client);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Relay {
    shared: Arc<Shared>,
    address: Address,
    _accept: Arc<AbortOnDrop>,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("address", &self.address.to_string())
            .field("target", &self.shared.target.to_string())
            .field("stats", &self.stats())
            .finish()
    }
}

struct AbortOnDrop(AbortHandle, Option<PathBuf>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
        if let Some(p) = &self.1 {
            let _ = std::fs::remove_file(p);
        }
    }
}

enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl Relay {
    /// Listen at `listen` (`tcp://host:port`, port 0 picks one, or
    /// `unix:///path`) and relay every connection to `target`.
    pub async fn start(listen: &Address, target: &Address, faults: Faults) -> Result<Self, Error> {
        check_scheme(target)?;
        let (listener, address, path) = match listen.scheme() {
            "tcp" => {
                let l = TcpListener::bind(listen.authority())
                    .await
                    .map_err(|e| Error::Io(listen.to_string(), e))?;
                let port = l
                    .local_addr()
                    .map_err(|e| Error::Io(listen.to_string(), e))?
                    .port();
                (Listener::Tcp(l), listen.clone().with_port(port), None)
            }
            "unix" => {
                let path = PathBuf::from(listen.path());
                let l = UnixListener::bind(&path).map_err(|e| Error::Io(listen.to_string(), e))?;
                (Listener::Unix(l), listen.clone(), Some(path))
            }
            other => return Err(Error::Scheme(other.to_owned())),
        };
        let shared = Arc::new(Shared {
            faults,
            target: target.clone(),
            partitioned: AtomicBool::new(false),
            blackhole: watch::Sender::new(false),
            conns: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(0),
            stats: Mutex::new(RelayStats::default()),
            joined: watch::Sender::new(0),
        });
        let s = shared.clone();
        let task = tokio::spawn(async move {
            loop {
                let accepted: std::io::Result<(BoxRead, BoxWrite)> = match &listener {
                    Listener::Tcp(l) => l.accept().await.map(|(c, _)| {
                        let _ = c.set_nodelay(true);
                        let (r, w) = c.into_split();
                        (Box::new(r) as BoxRead, Box::new(w) as BoxWrite)
                    }),
                    Listener::Unix(l) => l.accept().await.map(|(c, _)| {
                        let (r, w) = c.into_split();
                        (Box::new(r) as BoxRead, Box::new(w) as BoxWrite)
                    }),
                };
                match accepted {
                    Ok(conn) => {
                        let s = s.clone();
                        tokio::spawn(async move { s.join(conn).await });
                    }
                    Err(e) => {
                        tracing::warn!("relay accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        });
        Ok(Self {
            shared,
            address,
            _accept: Arc::new(AbortOnDrop(task.abort_handle(), path)),
        })
    }

    /// Where to connect to go through the relay.
    pub fn address(&self) -> &Address {
        &self.address
    }

    /// Close every connection now, both ends, like pulling a cable that
    /// both sides notice: the nodes see their link close. New connections
    /// are still accepted.
    pub fn cut(&self) {
        let conns: Vec<_> = self.shared.lock_conns().drain().collect();
        let n = conns.len() as u64;
        for (_, handles) in conns {
            for h in handles {
                h.abort();
            }
        }
        let mut st = self.shared.lock_stats();
        st.open = st.open.saturating_sub(n);
        st.cuts += 1;
    }

    /// Cut, and refuse new connections until [`heal`](Self::heal): a
    /// partition that both sides notice (dials fail).
    pub fn partition(&self) {
        self.shared.partitioned.store(true, Ordering::SeqCst);
        self.cut();
    }

    /// Accept connections again after [`partition`](Self::partition), and
    /// forward again after [`blackhole`](Self::blackhole).
    pub fn heal(&self) {
        self.shared.partitioned.store(false, Ordering::SeqCst);
        self.shared.blackhole.send_replace(false);
    }

    /// A silent partition: connections stay open but nothing is forwarded
    /// (bytes wait in the relay) until [`heal`](Self::heal); the nodes
    /// notice only by their idle timeout.
    pub fn blackhole(&self) {
        self.shared.blackhole.send_replace(true);
    }

    /// The counters so far (faults of closed connections included).
    pub fn stats(&self) -> RelayStats {
        *self.shared.lock_stats()
    }

    /// Wait until `n` connections in all were joined to the target.
    pub async fn wait_connections(&self, n: u64) {
        let mut rx = self.shared.joined.subscribe();
        let _ = rx.wait_for(|&c| c >= n).await;
    }

    /// Connections joined so far.
    pub fn connections(&self) -> u64 {
        *self.shared.joined.borrow()
    }
}

fn check_scheme(a: &Address) -> Result<(), Error> {
    match a.scheme() {
        "tcp" | "unix" => Ok(()),
        other => Err(Error::Scheme(other.to_owned())),
    }
}

impl Shared {
    fn lock_conns(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Vec<AbortHandle>>> {
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_stats(&self) -> std::sync::MutexGuard<'_, RelayStats> {
        self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn dial(&self) -> std::io::Result<(BoxRead, BoxWrite)> {
        match self.target.scheme() {
            "tcp" => {
                let c = TcpStream::connect(self.target.authority()).await?;
                let _ = c.set_nodelay(true);
                let (r, w) = c.into_split();
                Ok((Box::new(r), Box::new(w)))
            }
            _ => {
                let c = UnixStream::connect(self.target.path()).await?;
                let (r, w) = c.into_split();
                Ok((Box::new(r), Box::new(w)))
            }
        }
    }

    async fn join(self: Arc<Self>, (cr, cw): (BoxRead, BoxWrite)) {
        if self.partitioned.load(Ordering::SeqCst) {
            self.lock_stats().refused += 1;
            return; // dropping the client's stream closes it
        }
        let (tr, tw) = match self.dial().await {
            Ok(t) => t,
            Err(e) => {
                tracing::debug!("relay: target {} unreachable: {e}", self.target);
                self.lock_stats().refused += 1;
                return;
            }
        };
        let conn = self.next_conn.fetch_add(1, Ordering::SeqCst);
        let seed = self.faults.seed;
        let up = tokio::spawn(pump(self.clone(), cr, tw, derive(seed, conn, 0), conn));
        let down = tokio::spawn(pump(self.clone(), tr, cw, derive(seed, conn, 1), conn));
        self.lock_conns()
            .insert(conn, vec![up.abort_handle(), down.abort_handle()]);
        {
            let mut st = self.lock_stats();
            st.connections += 1;
            st.open += 1;
        }
        self.joined.send_modify(|c| *c += 1);
        // When one direction ends (EOF or error), end the other too.
        let (a, b) = (up.abort_handle(), down.abort_handle());
        tokio::select! {
            _ = up => b.abort(),
            _ = down => a.abort(),
        }
        if self.lock_conns().remove(&conn).is_some() {
            let mut st = self.lock_stats();
            st.open = st.open.saturating_sub(1);
        }
    }
}

/// One direction of one connection: read, damage, delay, write.
async fn pump(shared: Arc<Shared>, mut r: BoxRead, w: BoxWrite, seed: u64, conn: u64) {
    let faults = shared.faults.clone();
    let mut engine = StreamFaults::new(&faults, seed);
    let mut jitter_rng = Rng::new(seed ^ 0x5151);
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>(256);
    let writer = tokio::spawn(deliver(shared.clone(), rx, w));
    let _writer_guard = AbortOnDrop(writer.abort_handle(), None);
    let mut buf = vec![0u8; 64 * 1024];
    let mut last_due = Instant::now();
    let mut budget_at = Instant::now();
    let mut reported = FaultCounts::default();
    loop {
        // A reordering that waits for bytes that do not come is released
        // after a short while (its bytes go out in order).
        let read = if engine.holding() {
            match tokio::time::timeout(Duration::from_millis(20), r.read(&mut buf)).await {
                Ok(r) => r,
                Err(_) => {
                    let mut out = Vec::new();
                    engine.flush(&mut out);
                    if tx.send((last_due, out)).await.is_err() {
                        break;
                    }
                    continue;
                }
            }
        } else {
            r.read(&mut buf).await
        };
        let n = match read {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut out = Vec::with_capacity(n + 32);
        engine.apply(&buf[..n], &mut out);
        let now = Instant::now();
        let jitter = if faults.jitter.is_zero() {
            Duration::ZERO
        } else {
            faults.jitter.mul_f64(jitter_rng.unit())
        };
        let mut due = (now + faults.latency + jitter).max(last_due);
        if let Some(bw) = faults.bandwidth {
            let start = budget_at.max(now);
            budget_at = start + Duration::from_secs_f64(out.len() as f64 / bw as f64);
            due = due.max(budget_at);
        }
        last_due = due;
        let c = engine.counts();
        let mut delta = c;
        delta.units_in -= reported.units_in;
        delta.units_out -= reported.units_out;
        delta.lost -= reported.lost;
        delta.duplicated -= reported.duplicated;
        delta.reordered -= reported.reordered;
        delta.corrupted -= reported.corrupted;
        reported = c;
        shared.lock_stats().faults.add(&delta);
        if !out.is_empty() && tx.send((due, out)).await.is_err() {
            break;
        }
    }
    let mut out = Vec::new();
    engine.flush(&mut out);
    if !out.is_empty() {
        let _ = tx.send((last_due, out)).await;
    }
    drop(tx);
    tracing::trace!(conn, "relay direction finished reading");
    // Let the writer deliver what is queued, then end.
    let _ = writer.await;
}

async fn deliver(shared: Arc<Shared>, mut rx: mpsc::Receiver<(Instant, Vec<u8>)>, mut w: BoxWrite) {
    let mut hole = shared.blackhole.subscribe();
    while let Some((due, bytes)) = rx.recv().await {
        tokio::time::sleep_until(due).await;
        if hole.wait_for(|on| !*on).await.is_err() {
            return;
        }
        if w.write_all(&bytes).await.is_err() {
            return;
        }
    }
    let _ = w.shutdown().await;
}
