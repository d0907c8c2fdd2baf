//! Shared support for the cross-crate and multi-process tests in this
//! folder: deterministic test data and a driver for `oscloud-testnode`
//! processes.
// Test support: a failed expectation must stop the test, loudly.
#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout
)]

pub mod zenohd;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;

/// A fixed CPU-bound job for the pool tests and bench: `rounds` steps of
/// xorshift from `n`. Deterministic, so a result can be checked.
pub fn pool_work(n: u64, rounds: u32) -> u64 {
    let mut x = n ^ 0x9E37_79B9_7F4A_7C15;
    for _ in 0..rounds {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    x
}

/// A running FNV-1a (64-bit) checksum and byte count.
#[derive(Debug, Clone, Copy)]
pub struct Fnv {
    /// Bytes seen.
    pub bytes: u64,
    /// The checksum so far.
    pub hash: u64,
}

impl Default for Fnv {
    fn default() -> Self {
        Self {
            bytes: 0,
            hash: 0xcbf2_9ce4_8422_2325,
        }
    }
}

impl Fnv {
    /// Add `data`.
    pub fn update(&mut self, data: &[u8]) {
        for &b in data {
            self.hash ^= u64::from(b);
            self.hash = self.hash.wrapping_mul(0x0100_0000_01b3);
        }
        self.bytes += data.len() as u64;
    }
}

/// `n` bytes of a fixed pseudo-random stream, cut into frames of 1 byte to
/// 16 KiB.
pub fn pseudo_random_frames(n: usize) -> impl Iterator<Item = Bytes> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut left = n;
    std::iter::from_fn(move || {
        if left == 0 {
            return None;
        }
        let len = ((next() % (16 * 1024)) as usize + 1).min(left);
        left -= len;
        Some(Bytes::from(
            (0..len).map(|_| next() as u8).collect::<Vec<u8>>(),
        ))
    })
}

/// One `oscloud-testnode` process: send it commands, read its lines.
#[derive(Debug)]
pub struct TestNode {
    /// Its name (`--name`).
    pub name: String,
    child: Child,
    stdin: ChildStdin,
    stdout: mpsc::UnboundedReceiver<String>,
    stderr: mpsc::UnboundedReceiver<String>,
    /// The addresses it reported it listens on.
    pub listening: Vec<String>,
    log: Vec<String>,
    /// How long one expected line may take ([`LINE_DEADLINE`] unless set).
    pub line_deadline: Duration,
}

/// How long any single expected line may take.
pub const LINE_DEADLINE: Duration = Duration::from_secs(15);

impl TestNode {
    /// Start `binary --name name args...` and wait until it is ready.
    pub async fn start(binary: &Path, name: &str, args: &[&str]) -> Self {
        Self::start_with_env(binary, name, args, &[]).await
    }

    /// [`Self::start`] with environment variables `env` set for it.
    pub async fn start_with_env(
        binary: &Path,
        name: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let mut command = Command::new(binary);
        command
            .arg("--name")
            .arg(name)
            .args(args)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied());
        Self::start_command(command, name).await
    }

    /// Start `command`, a program that answers like `oscloud-testnode`
    /// (`listening <uri>` lines, then `ready`), and wait until it is ready.
    pub async fn start_command(mut command: Command, name: &str) -> Self {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        let stdin = child.stdin.take().expect("stdin");
        let stdout = lines_of(child.stdout.take().expect("stdout"));
        let stderr = lines_of(child.stderr.take().expect("stderr"));
        let mut node = Self {
            name: name.to_owned(),
            child,
            stdin,
            stdout,
            stderr,
            listening: Vec::new(),
            log: Vec::new(),
            line_deadline: LINE_DEADLINE,
        };
        loop {
            let line = node.line().await;
            if let Some(addr) = line.strip_prefix("listening ") {
                node.listening.push(addr.to_owned());
            } else if line == "ready" {
                return node;
            }
        }
    }

    /// The next stdout line, skipping `linked` notices.
    pub async fn line(&mut self) -> String {
        loop {
            let got = tokio::time::timeout(self.line_deadline, self.stdout.recv()).await;
            let Ok(got) = got else {
                let log = self.stderr_now();
                panic!(
                    "{}: no output within {:?}; stderr:\n{log}",
                    self.name, self.line_deadline
                );
            };
            let Some(line) = got else {
                let log = self.stderr_now();
                panic!("{}: exited; stderr:\n{log}", self.name);
            };
            if !line.starts_with("linked ") {
                return line;
            }
        }
    }

    /// Send `cmd` and return the answer line.
    pub async fn ask(&mut self, cmd: &str) -> String {
        self.send(cmd).await;
        self.line().await
    }

    /// Send `cmd` without waiting for an answer.
    pub async fn send(&mut self, cmd: &str) {
        self.stdin
            .write_all(format!("{cmd}\n").as_bytes())
            .await
            .unwrap_or_else(|e| panic!("{}: stdin: {e}", self.name));
    }

    /// The first stdout line starting with `prefix` (others are skipped).
    pub async fn expect(&mut self, prefix: &str) -> String {
        loop {
            let line = self.line().await;
            if line.starts_with(prefix) {
                return line;
            }
        }
    }

    /// Everything it wrote to stderr so far.
    pub fn stderr_now(&mut self) -> String {
        while let Ok(l) = self.stderr.try_recv() {
            self.log.push(l);
        }
        self.log.join("\n")
    }

    /// Wait until its stderr has a line containing every one of `words`.
    pub async fn expect_log(&mut self, words: &[&str]) -> String {
        let matches = |l: &str| words.iter().all(|w| l.contains(w));
        if let Some(l) = self.log.iter().find(|l| matches(l)) {
            return l.clone();
        }
        let deadline = tokio::time::Instant::now() + self.line_deadline;
        loop {
            let line = tokio::time::timeout_at(deadline, self.stderr.recv())
                .await
                .unwrap_or_else(|_| panic!("{}: no log line with {words:?}", self.name))
                .unwrap_or_else(|| panic!("{}: stderr closed", self.name));
            self.log.push(line.clone());
            if matches(&line) {
                return line;
            }
        }
    }

    /// Send it a signal by name (`STOP`, `CONT`, ...) with kill(1).
    pub fn signal(&self, sig: &str) {
        let pid = self.child.id().expect("running").to_string();
        let ok = std::process::Command::new("kill")
            .args([&format!("-{sig}"), &pid])
            .status()
            .expect("kill(1)")
            .success();
        assert!(ok, "kill -{sig} {pid} failed");
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    /// Kill it with SIGKILL and wait until it is gone.
    pub async fn kill9(&mut self) {
        self.child.start_kill().expect("kill");
        let _ = self.child.wait().await;
    }
}

fn lines_of(
    out: impl tokio::io::AsyncRead + Unpin + Send + 'static,
) -> mpsc::UnboundedReceiver<String> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut lines = BufReader::new(out).lines();
        while let Ok(Some(l)) = lines.next_line().await {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    rx
}

/// Pipe `n` pseudo-random bytes from testnode `from` into port `in` of
/// `server` (`pipe SERVER in N`), then wait until the sink server `sink`
/// on testnode `at` counted them (`sinkwait`): both answers must carry the
/// byte count and checksum of what was sent. Returns how long it took.
pub async fn pipe_into_sink(
    from: &mut TestNode,
    server: &str,
    at: &mut TestNode,
    sink: &str,
    n: usize,
) -> Duration {
    let started = std::time::Instant::now();
    let piped = from.ask(&format!("pipe {server} in {n}")).await;
    let mut expect = Fnv::default();
    pseudo_random_frames(n).for_each(|f| expect.update(&f));
    assert_eq!(piped, format!("piped {n} {}", expect.hash));
    let sunk = at.ask(&format!("sinkwait {sink} {n}")).await;
    assert_eq!(
        sunk,
        format!("sink {n} {}", expect.hash),
        "bytes lost or damaged"
    );
    started.elapsed()
}

/// Print a link's counters, one line, indented, for a test's output.
pub fn show_link(name: &str, l: &oscloud_core::LinkStatus) {
    let s = &l.stats;
    println!(
        "  {name}: frames sent {} recv {}, bytes sent {} (payload {}) recv {} (payload {}), \
         retransmissions {} ({} fast, {} timeouts), duplicates {}, out of order {}, crc failures {}, \
         framing failures {}, resumes {}, srtt {:.1} ms ({} samples), rto {:.1} ms",
        s.frames_sent,
        s.frames_received,
        s.bytes_sent,
        s.payload_bytes_sent,
        s.bytes_received,
        s.payload_bytes_received,
        s.retransmissions,
        s.fast_retransmits,
        s.timeouts,
        s.duplicates,
        s.out_of_order,
        s.crc_failures,
        s.framing_failures,
        s.resumes,
        s.srtt_us as f64 / 1e3,
        s.rtt_samples,
        s.rto_us as f64 / 1e3
    );
}

/// `n` bytes in `took`, in KiB/s.
pub fn kib_s(n: usize, took: Duration) -> f64 {
    n as f64 / 1024.0 / took.as_secs_f64()
}

/// Wait until `node`'s registry has `name` (announced by a peer), for at
/// most `within`.
pub async fn lookup(
    node: &oscloud_core::Node,
    name: &str,
    within: Duration,
) -> oscloud_core::Entry {
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Ok(e) = node.kernel().registry().lookup(name) {
            return e;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{name} not announced in time"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// `n` sequential calls to an echo server, each answered within `within`
/// and checked; how long they took.
pub async fn echo_calls(echo: &oscloud_core::Entry, n: usize, within: Duration) -> Duration {
    let t = std::time::Instant::now();
    for i in 0..n {
        let msg = Bytes::from(format!("call {i}"));
        let reply = tokio::time::timeout(within, echo.endpoint().call(msg.clone()))
            .await
            .expect("call answered in time")
            .unwrap();
        assert_eq!(reply, msg);
    }
    t.elapsed()
}

/// The echo server of the in-process link tests: echoes calls, ignores
/// casts; port `collect` reads a pipe to its end and answers with the byte
/// count and FNV-1a checksum (16 bytes, big-endian; see
/// [`collect_transfer`]).
#[derive(Debug)]
pub struct Echo;

#[async_trait::async_trait]
impl oscloud_core::Endpoint for Echo {
    fn try_cast(&self, _msg: Bytes) -> Result<(), oscloud_core::Error> {
        Ok(())
    }

    async fn call(&self, msg: Bytes) -> Result<Bytes, oscloud_core::Error> {
        Ok(msg)
    }

    async fn open_pipe(
        &self,
        port: &str,
        end: oscloud_core::PipeEnd,
    ) -> Result<(), oscloud_core::Error> {
        if port != "collect" {
            return Err(oscloud_core::Error::NoSuchPort {
                name: "echo".into(),
                port: port.into(),
            });
        }
        answer_collect(end);
        Ok(())
    }
}

/// Serve one `collect` pipe: read it to its end, then answer on it with
/// the byte count and FNV-1a checksum (16 bytes, big-endian), as
/// [`collect_transfer`] expects.
pub fn answer_collect(end: oscloud_core::PipeEnd) {
    tokio::spawn(async move {
        let (mut r, w) = end.split();
        let mut fnv = Fnv::default();
        while let Some(f) = r.recv().await {
            fnv.update(&f);
        }
        let mut answer = fnv.bytes.to_be_bytes().to_vec();
        answer.extend(fnv.hash.to_be_bytes());
        let _ = w.send(Bytes::from(answer)).await;
    });
}

/// Send `n` bytes through a pipe to `echo`'s `collect` port, whose answer
/// (byte count and checksum) must come within `within`; how long it took.
pub async fn collect_transfer(
    node: &oscloud_core::Node,
    echo: &oscloud_core::Entry,
    n: usize,
    within: Duration,
) -> Duration {
    let t = std::time::Instant::now();
    let (mine, theirs) = node.kernel().duplex();
    echo.endpoint().open_pipe("collect", theirs).await.unwrap();
    let (mut reader, writer) = mine.split();
    let mut sent = Fnv::default();
    for f in pseudo_random_frames(n) {
        sent.update(&f);
        writer.send(f).await.unwrap();
    }
    drop(writer);
    let answer = tokio::time::timeout(within, reader.recv())
        .await
        .expect("transfer finished in time")
        .expect("an answer");
    assert_eq!(answer[..8], sent.bytes.to_be_bytes(), "byte count");
    assert_eq!(answer[8..], sent.hash.to_be_bytes(), "checksum");
    t.elapsed()
}

/// A field of `/proc/PID/status` given in kB (`VmRSS`, `VmHWM`), in KiB;
/// `None` once the process is gone.
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Complete a real handshake over `s` with a wire session of our own,
/// configured by `config`, and return it connected: a raw peer that can
/// then send whatever it likes.
pub async fn raw_handshake(
    s: &mut tokio::net::TcpStream,
    config: oscloud_core::wire::Config,
) -> oscloud_core::wire::Session {
    use oscloud_core::wire::{Event, LocalInfo, Session};
    use std::time::Instant;
    use tokio::io::AsyncReadExt;
    let mut session = Session::new(
        config,
        LocalInfo::new(oscloud_core::NodeId::random()),
        Instant::now(),
    )
    .unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        while let Some(out) = session.poll_transmit(Instant::now()) {
            s.write_all(&out).await.unwrap();
        }
        while let Some(ev) = session.poll_event() {
            if let Event::Connected(_) = ev {
                // Flush what the session still has to say (its HelloAck).
                while let Some(out) = session.poll_transmit(Instant::now()) {
                    s.write_all(&out).await.unwrap();
                }
                return session;
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("handshake stalled")
            .unwrap();
        assert!(n > 0, "the node closed during the handshake");
        session.handle_input(Instant::now(), &buf[..n]);
    }
}
