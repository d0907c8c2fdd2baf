//! What the node benches share: the bench server, the sizes of the
//! measures, and the clocks (wall, CPU, context switches).
#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use oscloud_actors::{Context, PipeOutcome, Server, ServerError, async_trait};
use oscloud_core::PipeEnd;
use tokio::sync::Notify;

/// Bytes moved by one pipe measure.
pub const PIPE_BYTES: usize = 256 << 20;
/// The pipe's frame size.
pub const FRAME: usize = 64 * 1024;

/// The frame size of a pipe measure: `OSCLOUD_BENCH_FRAME` bytes, default
/// [`FRAME`].
pub fn frame() -> usize {
    std::env::var("OSCLOUD_BENCH_FRAME")
        .ok()
        .and_then(|f| f.parse().ok())
        .unwrap_or(FRAME)
}
/// Casts in one message-rate measure.
pub const MESSAGES: u64 = 200_000;
/// Sequential calls in one round-trip measure.
pub const CALLS: u64 = 20_000;
const RUNS: usize = 5;

/// A 62-character string encodes to exactly 64 bytes of MessagePack.
pub fn msg64() -> String {
    "x".repeat(62)
}

/// What the bench server has received.
#[derive(Default)]
pub struct Counters {
    /// Pipe bytes, over every pipe opened to it.
    pub bytes: AtomicU64,
    /// Casts.
    pub casts: AtomicU64,
    /// Woken after every pipe frame.
    pub done: Notify,
}

impl Counters {
    /// Wait until the pipes have brought at least `n` bytes in all.
    pub async fn bytes_reach(&self, n: u64) {
        loop {
            // Registered before the check: a frame counted after it wakes it.
            let woken = self.done.notified();
            if self.bytes.load(Ordering::Acquire) >= n {
                return;
            }
            woken.await;
        }
    }
}

/// The server measured: counts casts and pipe bytes, answers a call with
/// its request, and `until N` once its pipes brought N bytes in all.
pub struct Bench(pub Arc<Counters>);

#[async_trait]
impl Server for Bench {
    type Request = String;
    type Reply = String;
    type State = ();

    async fn init(&self, _ctx: &mut Context) -> Result<(), ServerError> {
        Ok(())
    }

    async fn handle_cast(&self, _: &mut Context, _: &mut (), _: String) -> Result<(), ServerError> {
        self.0.casts.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn handle_call(
        &self,
        _: &mut Context,
        _: &mut (),
        m: String,
    ) -> Result<String, ServerError> {
        if let Some(n) = m.strip_prefix("until ").and_then(|n| n.parse().ok()) {
            self.0.bytes_reach(n).await;
        }
        Ok(m)
    }

    async fn handle_pipe(
        &self,
        ctx: &mut Context,
        _: &mut (),
        _port: String,
        end: PipeEnd,
    ) -> Result<PipeOutcome, ServerError> {
        let c = self.0.clone();
        let (mut r, _) = end.split();
        ctx.spawn(async move {
            while let Some(f) = r.recv().await {
                c.bytes.fetch_add(f.len() as u64, Ordering::AcqRel);
                c.done.notify_waiters();
            }
        });
        Ok(PipeOutcome::Accepted)
    }
}

/// The median of `v` (not empty).
pub fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// The median of `v`, 0 if empty.
pub fn median_n(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

/// CPU time (user + system) this process has used so far, and its context
/// switches (voluntary and not: each is a thread going to sleep or being
/// preempted, which is what task wake-ups across threads cost).
pub fn cpu_time() -> (Duration, u64) {
    // SAFETY: getrusage fills the struct it is given and nothing else.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    (
        tv(u.ru_utime) + tv(u.ru_stime),
        (u.ru_nvcsw + u.ru_nivcsw) as u64,
    )
}

/// One side of a measure: median wall time, CPU time and context switches.
#[derive(Default)]
pub struct Sample {
    pub wall: Duration,
    pub cpu: Duration,
    pub switches: u64,
}

/// What one run cost: CPU time and context switches since `before`.
pub fn used(before: (Duration, u64)) -> (Duration, u64) {
    let now = cpu_time();
    (now.0 - before.0, now.1 - before.1)
}

/// Runs per measure: `OSCLOUD_BENCH_RUNS`, default 5.
pub fn runs() -> usize {
    std::env::var("OSCLOUD_BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(RUNS)
}

/// CPU time per GiB, for a pipe measure of [`PIPE_BYTES`].
pub fn per_gib(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3 * (1 << 30) as f64 / PIPE_BYTES as f64
}

/// MiB/s, for a pipe measure of [`PIPE_BYTES`].
pub fn mib_s(d: Duration) -> f64 {
    PIPE_BYTES as f64 / 1048576.0 / d.as_secs_f64()
}

/// Print one row of a results table.
pub fn row(link: &str, measure: &str, ours: &str, raw: &str, ratio: f64) {
    println!("{link:<6} {measure:<26} {ours:>14} {raw:>14} {ratio:>9.2}x");
}

/// Run `f` where a server's code runs: in a task on a runtime worker
/// (`OSCLOUD_BENCH_IN=main`: in `block_on` on the main thread instead).
pub async fn on_worker<F, T>(f: F) -> T
where
    F: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    if std::env::var("OSCLOUD_BENCH_IN").as_deref() == Ok("main") {
        f.await
    } else {
        tokio::spawn(f).await.unwrap()
    }
}

/// A plain ractor actor that answers each call with the message it got:
/// the actor hop of a call without oscloud, for the "socket + ractor"
/// baseline (a raw ping-pong whose far side asks this actor for every
/// answer).
pub struct RawEcho;

/// A call to [`RawEcho`].
pub struct EchoCall(pub [u8; 64], pub ractor::RpcReplyPort<[u8; 64]>);

impl ractor::Actor for RawEcho {
    type Msg = EchoCall;
    type State = ();
    type Arguments = ();

    async fn pre_start(
        &self,
        _: ractor::ActorRef<EchoCall>,
        _: (),
    ) -> Result<(), ractor::ActorProcessingErr> {
        Ok(())
    }

    async fn handle(
        &self,
        _: ractor::ActorRef<EchoCall>,
        EchoCall(m, reply): EchoCall,
        _: &mut (),
    ) -> Result<(), ractor::ActorProcessingErr> {
        let _ = reply.send(m);
        Ok(())
    }
}

/// Answer `n` 64-byte messages on `s`, each through a [`RawEcho`] actor
/// call.
pub async fn serve_through_actor<S>(s: &mut S, n: u64)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (actor, handle) = ractor::Actor::spawn(None, RawEcho, ()).await.unwrap();
    let mut m = [0u8; 64];
    for _ in 0..n {
        s.read_exact(&mut m).await.unwrap();
        m = ractor::call!(actor, EchoCall, m).unwrap();
        s.write_all(&m).await.unwrap();
    }
    actor.stop(None);
    let _ = handle.await;
}

/// Open a pipe to `server`'s port `in` and write [`PIPE_BYTES`] into it in
/// frames of [`frame()`] bytes; when the writing started.
pub async fn write_pipe(server: &oscloud_actors::ServerRef) -> std::time::Instant {
    let end = server.open_pipe("in").await.unwrap();
    let size = frame();
    let frame = bytes::Bytes::from(vec![7u8; size]);
    let start = std::time::Instant::now();
    let (_, w) = end.split();
    for _ in 0..PIPE_BYTES / size {
        w.send(frame.clone()).await.unwrap();
    }
    start
}

/// [`CALLS`] sequential 64-byte calls to `server`, in a task on a worker;
/// how long they took.
pub async fn call_loop(server: oscloud_actors::ServerRef) -> Duration {
    on_worker(async move {
        let m = oscloud_actors::encode(&msg64()).unwrap();
        let start = std::time::Instant::now();
        for _ in 0..CALLS {
            server
                .call(m.clone(), Duration::from_secs(5))
                .await
                .unwrap();
        }
        start.elapsed()
    })
    .await
}

/// [`CALLS`] 64-byte ping-pongs on a raw socket `s`, in a task on a
/// worker; how long they took.
pub async fn ping_pong<S>(mut s: S) -> Duration
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    on_worker(async move {
        let mut m = [7u8; 64];
        let start = std::time::Instant::now();
        for _ in 0..CALLS {
            s.write_all(&m).await.unwrap();
            s.read_exact(&mut m).await.unwrap();
        }
        start.elapsed()
    })
    .await
}
