//! A real zenoh router (`zenohd`) for the multi-process tests: installed
//! by `scripts/install-zenohd.sh` into `target/tools/bin`, or named by the
//! `ZENOHD` environment variable.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

/// Test node arguments: a node liveness (60 s) far beyond every deadline
/// of the zenoh tests, so a link that fails within them was failed by the
/// transport (the peer's zenoh liveliness token going).
pub const LIVENESS: [&str; 4] = ["--keepalive-ms", "1000", "--idle-ms", "60000"];

/// The zenohd binary: `$ZENOHD`, or `target/tools/bin/zenohd`.
pub fn zenohd_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("ZENOHD") {
        return PathBuf::from(path);
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/tools/bin/zenohd");
    assert!(
        path.exists(),
        "zenohd not found at {}: run scripts/install-zenohd.sh (or set ZENOHD)",
        path.display()
    );
    path
}

/// A free TCP port on loopback (bound, then freed).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on loopback")
}

/// A zenohd process listening on a loopback port (killed when dropped).
#[derive(Debug)]
pub struct Router {
    /// The port it listens on.
    pub port: u16,
    child: Child,
}

impl Router {
    /// Start zenohd on a free port.
    pub async fn start() -> Self {
        Self::start_on(free_port()).await
    }

    /// Start zenohd on `port` and wait until it takes connections.
    pub async fn start_on(port: u16) -> Self {
        let child = Command::new(zenohd_binary())
            .args(["--listen", &format!("tcp/127.0.0.1:{port}")])
            .arg("--no-multicast-scouting")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start zenohd");
        let deadline = Instant::now() + Duration::from_secs(15);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "zenohd did not listen on {port}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Self { port, child }
    }

    /// The oscloud address of node `node` in cloud `cloud` through this
    /// router.
    pub fn addr(&self, cloud: &str, node: &str) -> String {
        format!("zenoh://127.0.0.1:{}/{cloud}/{node}", self.port)
    }

    /// The router's zenoh endpoint (`tcp/127.0.0.1:PORT`), for a plain
    /// zenoh session.
    pub fn endpoint(&self) -> String {
        format!("tcp/127.0.0.1:{}", self.port)
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Kill it with SIGKILL and wait until it is gone.
    pub async fn kill9(&mut self) {
        self.child.start_kill().expect("kill zenohd");
        let _ = self.child.wait().await;
    }
}
