//! Supervisors of C servers: restart them when they fail, as
//! `oscloud-actors` supervisors restart Rust servers (same strategies,
//! same restart intensity).
//!
//! A supervisor has a thread of its own that takes the failures its
//! servers report, one at a time. For each it counts a restart (more than
//! `max_restarts` within `period_ms` and it gives up: it stops every
//! server, last registered first, and restarts none again), stops the
//! siblings the strategy names (last registered first), then starts the
//! failed server and those siblings again in registration order. Stopping
//! and starting are requests queued to each server's own thread, so
//! `on_init` and `on_stop` run there like every other callback. A server
//! whose `on_init` fails to restart is tried again while the intensity
//! allows.

use std::collections::VecDeque;
use std::ffi::c_int;
use std::fmt;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing::{error, warn};

use crate::error::{Error, OSCLOUD_OK, guard, guard_void};
use crate::server::{Control, Inbox, on_server_thread};

/// Restart only the server that failed.
pub const OSCLOUD_STRATEGY_ONE_FOR_ONE: c_int = 0;
/// Stop every other server (last registered first), then restart all in
/// registration order.
pub const OSCLOUD_STRATEGY_ONE_FOR_ALL: c_int = 1;
/// Stop the servers registered after the one that failed (last first),
/// then restart it and them in registration order.
pub const OSCLOUD_STRATEGY_REST_FOR_ONE: c_int = 2;

/// How a supervisor restarts its servers. Start from
/// `oscloud_supervisor_options_default()`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct OscloudSupervisorOptions {
    /// One of `OSCLOUD_STRATEGY_*`.
    pub strategy: c_int,
    /// The most restarts allowed within `period_ms`; one more and the
    /// supervisor gives up.
    pub max_restarts: u32,
    /// The window of the restart intensity, in milliseconds.
    pub period_ms: u64,
}

/// One-for-one, at most 3 restarts in 5 seconds (as Rust supervisors).
#[unsafe(no_mangle)]
pub extern "C" fn oscloud_supervisor_options_default() -> OscloudSupervisorOptions {
    OscloudSupervisorOptions {
        strategy: OSCLOUD_STRATEGY_ONE_FOR_ONE,
        max_restarts: 3,
        period_ms: 5000,
    }
}

/// What a supervisor did so far.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct OscloudSupervisorStatus {
    /// Server starts after a failure (a one-for-all restart of three
    /// servers counts three).
    pub restarts: u64,
    /// The servers it supervises now.
    pub servers: u32,
    /// Whether it gave up (restart intensity exceeded): its servers are
    /// stopped for good.
    pub failed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Strategy {
    OneForOne,
    OneForAll,
    RestForOne,
}

/// A server's thread reports that incarnation `incarnation` of child
/// `child` failed.
pub(crate) struct Failure {
    pub(crate) child: u64,
    pub(crate) incarnation: u64,
    pub(crate) reason: String,
}

struct Child {
    id: u64,
    inbox: Arc<Inbox>,
    /// The incarnation running (a failure of an older one is stale).
    incarnation: u64,
}

struct State {
    next_id: u64,
    children: Vec<Child>,
    restarts: VecDeque<Instant>,
    total: u64,
    failed: Option<String>,
}

/// What a supervisor's handle, its servers and its thread share.
pub(crate) struct SupCore {
    strategy: Strategy,
    max_restarts: u32,
    period: Duration,
    state: Mutex<State>,
    /// `None` once the supervisor is dropped: failures are no longer
    /// handled.
    failures: Mutex<Option<mpsc::Sender<Failure>>>,
}

impl SupCore {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Supervise the server of `inbox` from now on (its first incarnation
    /// is number 1); its child id.
    pub(crate) fn add(&self, inbox: Arc<Inbox>) -> Result<u64, Error> {
        let mut st = self.lock();
        if let Some(why) = &st.failed {
            return Err(Error::SupervisorFailed(why.clone()));
        }
        st.next_id += 1;
        let id = st.next_id;
        st.children.push(Child {
            id,
            inbox,
            incarnation: 1,
        });
        Ok(id)
    }

    /// The server `id` is dropped: no longer supervised.
    pub(crate) fn remove(&self, id: u64) {
        self.lock().children.retain(|c| c.id != id);
    }

    /// A server failed (handled on the supervisor's thread).
    pub(crate) fn report(&self, failure: Failure) {
        let failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(tx) = failures.as_ref() {
            let _ = tx.send(failure);
        }
    }

    /// Count a restart; the reason to give up when that is one too many.
    fn note_restart(&self, st: &mut State) -> Result<(), String> {
        let now = Instant::now();
        st.restarts.push_back(now);
        while st
            .restarts
            .front()
            .is_some_and(|t| now.duration_since(*t) > self.period)
        {
            st.restarts.pop_front();
        }
        if st.restarts.len() > self.max_restarts as usize {
            return Err(format!(
                "restart intensity exceeded: more than {} restarts in {:?}",
                self.max_restarts, self.period
            ));
        }
        Ok(())
    }

    /// Handle one failure (see the module documentation).
    fn on_failure(&self, failure: Failure) {
        let (restart, id) = {
            let mut st = self.lock();
            if st.failed.is_some() {
                return;
            }
            let Some(i) = st.children.iter().position(|c| c.id == failure.child) else {
                return;
            };
            if st.children[i].incarnation != failure.incarnation {
                return; // restarted meanwhile
            }
            if let Err(why) = self.note_restart(&mut st) {
                drop(st);
                return self.give_up(format!("{why} (last: {})", failure.reason));
            }
            let set: Vec<(u64, Arc<Inbox>)> = st
                .children
                .iter()
                .enumerate()
                .filter(|(j, _)| match self.strategy {
                    Strategy::OneForOne => *j == i,
                    Strategy::OneForAll => true,
                    Strategy::RestForOne => *j >= i,
                })
                .map(|(_, c)| (c.id, c.inbox.clone()))
                .collect();
            (set, failure.child)
        };
        for (_, inbox) in restart.iter().rev().filter(|(c, _)| *c != id) {
            stop(inbox);
        }
        for (child, inbox) in &restart {
            loop {
                match start(inbox) {
                    Ok(incarnation) => {
                        let mut st = self.lock();
                        st.total += 1;
                        if let Some(c) = st.children.iter_mut().find(|c| c.id == *child) {
                            c.incarnation = incarnation;
                        }
                        break;
                    }
                    Err(None) => break, // dropped meanwhile
                    Err(Some(why)) => {
                        warn!(%why, "a C server did not restart");
                        let counted = self.note_restart(&mut self.lock());
                        if let Err(why) = counted {
                            return self.give_up(why);
                        }
                    }
                }
            }
        }
    }

    /// Stop every server, last registered first, for good.
    fn give_up(&self, why: String) {
        error!(%why, "supervisor of C servers gives up");
        let inboxes: Vec<Arc<Inbox>> = {
            let mut st = self.lock();
            st.failed = Some(why);
            st.children.iter().map(|c| c.inbox.clone()).collect()
        };
        for inbox in inboxes.iter().rev() {
            stop(inbox);
        }
    }
}

/// Stop the running incarnation of a server; returns once it has (or
/// once the server is gone).
fn stop(inbox: &Inbox) {
    let (tx, rx) = mpsc::channel();
    if inbox.control(Control::Stop(tx)) {
        let _ = rx.recv();
    }
}

/// Start a stopped server: its incarnation number, or why not (`None`:
/// the server is gone).
fn start(inbox: &Inbox) -> Result<u64, Option<String>> {
    let (tx, rx) = mpsc::channel();
    if !inbox.control(Control::Start(tx)) {
        return Err(None);
    }
    rx.recv().map_err(|_| None)?.map_err(Some)
}

/// A supervisor of C servers. Owned: drop it with `oscloud_supervisor_drop`.
pub struct OscloudSupervisor {
    core: Arc<SupCore>,
    thread: Option<JoinHandle<()>>,
}

impl fmt::Debug for OscloudSupervisor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OscloudSupervisor")
            .field("strategy", &self.core.strategy)
            .finish()
    }
}

impl OscloudSupervisor {
    pub(crate) fn core(&self) -> Arc<SupCore> {
        self.core.clone()
    }
}

impl Drop for OscloudSupervisor {
    fn drop(&mut self) {
        drop(
            self.core
                .failures
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        // The thread ends after the failure it handles now; it may be
        // waiting for a server thread, so never wait for it from one.
        if let Some(thread) = self.thread.take()
            && !on_server_thread()
        {
            let _ = thread.join();
        }
    }
}

/// Make a supervisor as `options` say (NULL: the defaults) and store its
/// handle in `*out`. Servers join it through
/// `oscloud_server_options_t.supervisor` when they are registered, in
/// order. Fails with `OSCLOUD_ERR_INVALID` for an unknown strategy.
///
/// # Safety
/// `options` is NULL or valid; `out` is writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn oscloud_supervisor_new(
    options: *const OscloudSupervisorOptions,
    out: *mut *mut OscloudSupervisor,
) -> c_int {
    guard(|| {
        // SAFETY: per the contract.
        let options = unsafe { options.as_ref() }
            .copied()
            .unwrap_or_else(|| oscloud_supervisor_options_default());
        if out.is_null() {
            return Err(Error::Null("out"));
        }
        let strategy = match options.strategy {
            OSCLOUD_STRATEGY_ONE_FOR_ONE => Strategy::OneForOne,
            OSCLOUD_STRATEGY_ONE_FOR_ALL => Strategy::OneForAll,
            OSCLOUD_STRATEGY_REST_FOR_ONE => Strategy::RestForOne,
            other => return Err(Error::Invalid(format!("unknown strategy {other}"))),
        };
        let (tx, rx) = mpsc::channel::<Failure>();
        let core = Arc::new(SupCore {
            strategy,
            max_restarts: options.max_restarts,
            period: Duration::from_millis(options.period_ms),
            state: Mutex::new(State {
                next_id: 0,
                children: Vec::new(),
                restarts: VecDeque::new(),
                total: 0,
                failed: None,
            }),
            failures: Mutex::new(Some(tx)),
        });
        let mine = core.clone();
        let thread = std::thread::Builder::new()
            .name("oscloud-sup".into())
            .spawn(move || {
                while let Ok(failure) = rx.recv() {
                    mine.on_failure(failure);
                }
            })
            .map_err(|e| Error::Runtime(e.to_string()))?;
        let sup = Box::new(OscloudSupervisor {
            core,
            thread: Some(thread),
        });
        // SAFETY: non-NULL and writable per the contract.
        unsafe { *out = Box::into_raw(sup) };
        Ok(OSCLOUD_OK)
    })
}

/// Copy what `supervisor` did so far into `*out`.
///
/// # Safety
/// `supervisor` is a live supervisor; `out` is writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn oscloud_supervisor_status(
    supervisor: *const OscloudSupervisor,
    out: *mut OscloudSupervisorStatus,
) -> c_int {
    guard(|| {
        // SAFETY: per the contract.
        let sup = unsafe { supervisor.as_ref() }.ok_or(Error::Null("supervisor"))?;
        // SAFETY: per the contract.
        let out = unsafe { out.as_mut() }.ok_or(Error::Null("out"))?;
        let st = sup.core.lock();
        *out = OscloudSupervisorStatus {
            restarts: st.total,
            servers: u32::try_from(st.children.len()).unwrap_or(u32::MAX),
            failed: st.failed.is_some(),
        };
        Ok(OSCLOUD_OK)
    })
}

/// Stop supervising and free the supervisor; sets `*supervisor` to NULL.
/// Its servers keep running (each stays until dropped), but a failure no
/// longer restarts them. NULL or already dropped does nothing.
///
/// # Safety
/// `supervisor` is NULL or points to NULL or to a supervisor from this
/// library.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn oscloud_supervisor_drop(supervisor: *mut *mut OscloudSupervisor) {
    guard_void(|| {
        if supervisor.is_null() {
            return;
        }
        // SAFETY: non-NULL per the contract.
        let raw = unsafe { std::ptr::replace(supervisor, std::ptr::null_mut()) };
        if !raw.is_null() {
            // SAFETY: came from `Box::into_raw` in `oscloud_supervisor_new`.
            drop(unsafe { Box::from_raw(raw) });
        }
    });
}
