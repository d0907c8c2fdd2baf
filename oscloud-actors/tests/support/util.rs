//! Shared test helpers: a scriptable test server and waiting helpers.
#![allow(
    dead_code,
    unreachable_pub,
    missing_docs,
    missing_debug_implementations,
    clippy::unwrap_used,
    clippy::panic
)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use oscloud_actors::{Context, Down, MonitorRef, PipeOutcome, Server, ServerError, async_trait};
use oscloud_core::{ExitReason, PipeEnd, RegistryEvent, Watch};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

pub const T: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Req {
    Add(u64),
    Get,
    Who,
    Fail(String),
    Panic,
    Slow,
    Stop,
    Monitor(String),
    Demonitor(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Rep {
    Count(u64),
    Who(String),
    Done,
    Bool(bool),
}

/// What test servers record, shared with the test.
#[derive(Clone, Default)]
pub struct Probe {
    pub log: Arc<Mutex<Vec<String>>>,
    pub downs: Arc<Mutex<Vec<Down>>>,
}

impl Probe {
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
    pub fn clear(&self) {
        self.log.lock().unwrap().clear();
    }
    pub fn downs(&self) -> Vec<Down> {
        self.downs.lock().unwrap().clone()
    }
}

pub struct TestServer {
    pub id: String,
    pub probe: Probe,
    pub gate: Arc<Notify>,
    pub fail_init: bool,
}

impl TestServer {
    pub fn new(id: &str, probe: &Probe) -> Self {
        Self {
            id: id.to_owned(),
            probe: probe.clone(),
            gate: Arc::new(Notify::new()),
            fail_init: false,
        }
    }
}

#[derive(Default)]
pub struct St {
    count: u64,
    monitors: HashMap<String, MonitorRef>,
}

impl TestServer {
    async fn common(&self, ctx: &mut Context, st: &mut St, req: Req) -> Result<Rep, ServerError> {
        Ok(match req {
            Req::Add(n) => {
                st.count += n;
                Rep::Count(st.count)
            }
            Req::Get => Rep::Count(st.count),
            Req::Who => Rep::Who(self.id.clone()),
            Req::Fail(why) => return Err(why.into()),
            Req::Panic => panic!("deliberate panic in {}", self.id),
            Req::Slow => {
                self.gate.notified().await;
                Rep::Done
            }
            Req::Stop => {
                ctx.stop();
                Rep::Done
            }
            Req::Monitor(name) => {
                let m = ctx.monitor(&name);
                st.monitors.insert(name, m);
                Rep::Done
            }
            Req::Demonitor(name) => {
                let m = st.monitors.remove(&name);
                Rep::Bool(m.is_some_and(|m| ctx.demonitor(m)))
            }
        })
    }
}

#[async_trait]
impl Server for TestServer {
    type Request = Req;
    type Reply = Rep;
    type State = St;

    async fn init(&self, _ctx: &mut Context) -> Result<St, ServerError> {
        self.probe
            .log
            .lock()
            .unwrap()
            .push(format!("start:{}", self.id));
        if self.fail_init {
            return Err(format!("{} refuses to start", self.id).into());
        }
        Ok(St::default())
    }

    async fn handle_cast(
        &self,
        ctx: &mut Context,
        st: &mut St,
        req: Req,
    ) -> Result<(), ServerError> {
        self.common(ctx, st, req).await.map(|_| ())
    }

    async fn handle_call(
        &self,
        ctx: &mut Context,
        st: &mut St,
        req: Req,
    ) -> Result<Rep, ServerError> {
        self.common(ctx, st, req).await
    }

    async fn handle_pipe(
        &self,
        ctx: &mut Context,
        _st: &mut St,
        port: String,
        mut end: PipeEnd,
    ) -> Result<PipeOutcome, ServerError> {
        if port != "echo" {
            return Ok(PipeOutcome::NoSuchPort);
        }
        ctx.spawn(async move {
            while let Some(frame) = end.recv().await {
                if end.send(frame).await.is_err() {
                    break;
                }
            }
        });
        Ok(PipeOutcome::Accepted)
    }

    async fn handle_down(
        &self,
        _ctx: &mut Context,
        _st: &mut St,
        down: Down,
    ) -> Result<(), ServerError> {
        self.probe.downs.lock().unwrap().push(down);
        Ok(())
    }
}

/// Poll `f` until it is true; panic after the deadline.
pub async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + T;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// A registry event in a compact comparable form: `+name` or
/// `-name:normal` / `-name:failed`.
pub fn short(ev: &RegistryEvent) -> String {
    match ev {
        RegistryEvent::Added(e) => format!("+{}", e.name()),
        RegistryEvent::Removed { entry, reason } => {
            let r = match reason {
                ExitReason::Normal => "normal",
                ExitReason::Failed(_) => "failed",
                ExitReason::LinkDown(_) => "linkdown",
            };
            format!("-{}:{r}", entry.name())
        }
    }
}

/// The next `n` events of `watch`, in short form.
pub async fn next_events(watch: &mut Watch, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..n {
        let ev = tokio::time::timeout(T, watch.next())
            .await
            .expect("registry event in time")
            .expect("registry alive");
        out.push(short(&ev));
    }
    out
}

/// Drain the snapshot part of a fresh watch (`n` entries present).
pub async fn skip(watch: &mut Watch, n: usize) {
    next_events(watch, n).await;
}

/// The kernel error inside `e`; panics if it is not one.
pub fn core(e: oscloud_actors::Error) -> oscloud_core::Error {
    match e {
        oscloud_actors::Error::Core(c) => c,
        other => panic!("expected a kernel error, got {other:?}"),
    }
}
