//! The driver of one link: joins a wire [`Session`] to the link's bytes and
//! to the local kernel.
//!
//! The session is sans-IO; this is the thin async part. One task drives
//! the session and reacts to what happens: bytes from the link, room to
//! write on the link, commands from endpoints, frames from local pipe
//! readers, changes in the local registry, the session's timer, and kicks
//! from senders. The session and the link's writer sit under a lock the
//! driver shares with the link's senders, which put casts and calls into
//! the session and write calls to the link themselves (see `link_wire`);
//! the driver holds it only for steps on the session. Output waiting
//! for the link is bounded (see `link_io`), so a slow link pushes back on
//! the session instead of growing memory, and reading never waits for
//! writing.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, info, warn};

use super::bridge::{Bridge, Delivered, Outbound};
use super::cast_batch::CastBatch;
use super::cast_target::{CastTarget, Generations};
use super::held_casts::HeldCasts;
use super::idle_close::IdleClose;
use super::link_io::{Incoming, Input, LinkPorts, WriteFailed};
use super::link_wire::{LinkWire, Taken, Wire};
use super::remote::{Command, RemoteEndpoint, SendQueue, from_remote, to_remote};
use super::resume::{Handover, Resumption};
use super::router::{Export, Router};
use super::routes::{Hop, LinkId};
use super::rtt_probe::{PROBE_NAME, PROBE_PAYLOAD, RttProbe};
use super::serving::Serving;
use super::signals::{self, Doorbell, Sources};
use super::stats::LinkShared;
use super::wakeups::{self, Wakeups};
use crate::access::{AccessPolicy, Action, Caller, with_caller, with_caller_sync};
use crate::id_hash::IdMap;
use crate::identity::{AllowList, PublicKey};
use crate::trace;
use crate::wire::{
    CallId, CloseCode, CloseReason, EntryInfo, Event, FEATURE_DIRECTORY, FEATURE_ROUTING, Name,
    PeerInfo, PipeId, RemoteError, RemoteErrorKind, RouteInfo, Session,
};
use crate::{Entry, Error, ExitReason, Kernel, NodeId, PipeEnd, RegistryEvent, Watch};

/// At most this many queued commands are handled in a row.
const COMMAND_BATCH: usize = 64;

/// At most this many reads of what already came, once the link's writer
/// failed (see [`Incoming::feed_ready`]).
const READ_AFTER_WRITE_FAILED: usize = 16;

/// The state of one link's driver.
pub(crate) struct Driver {
    kernel: Kernel,
    /// The session, the link's writer and our calls, shared with the
    /// link's senders.
    wire: Arc<LinkWire>,
    link: String,
    commands_tx: mpsc::UnboundedSender<Command>,
    /// The budget of casts and calls queued for this link.
    queue: Arc<SendQueue>,
    commands: mpsc::UnboundedReceiver<Command>,
    peer: Option<PeerInfo>,
    /// The node's routes, which this link feeds and exports.
    routing: Routing,
    /// Routed entries announced to the peer: the version of the route
    /// announced (`RouteTable::version`), by registry entry id.
    exported: HashMap<u64, u64>,
    /// Local registry changes, once connected.
    watch: Option<Watch>,
    /// `watch` was set since the run loop last looked: it has not been
    /// polled, so nothing wakes the driver for it yet.
    watch_added: bool,
    /// The peer's calls to local servers, waiting for their replies, with
    /// the length of each request. They are polled here rather than in
    /// tasks of their own: a reply then wakes this task once, instead of a
    /// task that then wakes this one.
    serving: Serving<(CallId, usize, Result<Bytes, RemoteError>)>,
    /// What the peer may make this node hold for it.
    limits: Limits,
    /// Bytes of the requests in `serving`.
    serving_bytes: usize,
    /// Bytes of the replies in `blocked`.
    blocked_reply_bytes: usize,
    /// The peer's casts not yet handled by local servers.
    casts: HeldCasts,
    /// The peer's latest casts to one local server, gathered to be
    /// handed over together.
    gathered: CastBatch,
    /// The server the peer's latest cast went to, while the driver takes
    /// one read's events.
    cast_target: CastTarget,
    /// The session's events taken out under one lock, not yet acted on.
    events: VecDeque<Event>,
    /// Since when output has waited for the link without the link taking
    /// any (reset by every write that moves bytes).
    stalled_since: Option<Instant>,
    /// Since when the link has not been read because the peer holds more
    /// of this node than the budget (input paused).
    paused_since: Option<Instant>,
    pipes: IdMap<PipeId, Bridge>,
    /// The local readers of pipes with credit, polled here.
    outbound: Outbound,
    /// Commands the session refused because its send queue was full.
    blocked: VecDeque<Command>,
    /// Round-robin cursor for calls to local groups.
    rr: usize,
    /// What `Node::links` shows of this link: written here, in the same
    /// step as what it describes.
    shared: Arc<LinkShared>,
    connected: Option<oneshot::Sender<NodeId>>,
    /// What the peer may do with local servers.
    policy: AccessPolicy,
    /// Local entries announced to the peer (those it may look up).
    announced: HashSet<u64>,
    /// The allow-list of a secure node: a peer whose key leaves it loses
    /// the link.
    allow: Option<AllowList>,
    /// Rung when the policy, the routes or the allow-list change, or the
    /// node shuts down or closes the link.
    signals: Doorbell,
    /// Resumption after a lost link.
    resume: Resumption,
    /// The round-trip probe (`Node::links`' `rtt_us`).
    probe: RttProbe,
    /// Pipes a read-only peer opened, with their server: a frame the peer
    /// writes on one closes it.
    read_pipes: IdMap<PipeId, String>,
    /// A directory link this node dialled: closed once nothing uses it
    /// (see `idle_close`).
    idle: Option<IdleClose>,
    /// Messages the driver saw go either way (the probe's left out),
    /// counted for `idle`; senders count theirs in the wire.
    used: u64,
}

/// What one link's peer may make this node hold (from [`NodeConfig`]).
///
/// [`NodeConfig`]: super::NodeConfig
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// `NodeConfig::max_queued`: casts and calls of this node waiting for
    /// the link.
    pub(crate) max_queued: usize,
    /// `NodeConfig::link_budget`.
    pub(crate) budget: usize,
    /// `NodeConfig::max_serving`.
    pub(crate) max_serving: usize,
}

/// How a link takes part in routing.
pub(crate) struct Routing {
    /// The node's router.
    pub(crate) router: Arc<Router>,
    /// This link's id in the node (stable across resumptions).
    pub(crate) link: LinkId,
    /// The link's cost (see [`super::link_cost`]).
    pub(crate) cost: u32,
    /// This node dialled the link on demand, through a directory (the
    /// peer may say so too, with `FEATURE_DIRECTORY`).
    pub(crate) directory: bool,
    /// For a directory link this node dialled: how long it may go unused
    /// before this node closes it (None: never).
    pub(crate) idle: Option<Duration>,
}

/// What the session's events ask of the run loop.
enum Dispatch {
    /// Nothing special.
    Continue,
    /// The session is over.
    Closed(CloseReason),
    /// The link is lost; the session waits for a new one.
    Detached(String),
    /// A fresh session's peer asks to resume another session.
    ResumeRequested {
        node: NodeId,
        peer_session: u64,
        session: u64,
        hello: Bytes,
    },
}

/// What woke the driver: one source's item.
enum Woke {
    Input(Input),
    Written(Result<(), WriteFailed>),
    /// Boxed: a handover is large and rare.
    Handover(Box<Handover>),
    Command(Command),
    Reply(CallId, usize, Result<Bytes, RemoteError>),
    Local(PipeId, Option<Bytes>),
    Registry(RegistryEvent),
    Rung(u8),
    Timer,
    /// A sender asked for a turn.
    Kick,
}

/// How a link ended.
#[derive(Debug, Clone)]
pub(crate) struct Ended {
    pub(crate) reason: String,
    /// Whether the session had completed its handshake.
    pub(crate) was_connected: bool,
}

impl Driver {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        kernel: Kernel,
        session: Session,
        link: String,
        shared: Arc<LinkShared>,
        connected: Option<oneshot::Sender<NodeId>>,
        limits: Limits,
        policy: AccessPolicy,
        allow: Option<AllowList>,
        resume: Resumption,
        routing: Routing,
        (shutdown, closed): (watch::Receiver<bool>, watch::Receiver<bool>),
    ) -> Self {
        let (commands_tx, commands) = mpsc::unbounded_channel();
        let queue = Arc::new(SendQueue::new(limits.max_queued));
        shared.watch_send_queue(queue.clone());
        let mut policy_changed = policy.subscribe();
        policy_changed.mark_unchanged();
        // Subscribed before the handshake checks the list, so no change
        // falls between the check and the watch.
        let allow_changed = allow.as_ref().map(|list| {
            let mut rx = list.subscribe();
            rx.mark_unchanged();
            rx
        });
        let signals = Doorbell::watch(Sources {
            policy: policy_changed,
            routes: routing.router.subscribe(),
            allow: allow_changed,
            shutdown,
            closed,
        });
        Self {
            allow,
            signals,
            policy,
            announced: HashSet::new(),
            kernel,
            wire: Arc::new(LinkWire::new(session, shared.clone())),
            link,
            commands_tx,
            queue,
            commands,
            peer: None,
            exported: HashMap::new(),
            watch: None,
            watch_added: false,
            serving: Serving::new(),
            limits,
            serving_bytes: 0,
            blocked_reply_bytes: 0,
            casts: HeldCasts::new(limits.budget),
            gathered: CastBatch::default(),
            cast_target: CastTarget::default(),
            events: VecDeque::new(),
            stalled_since: None,
            paused_since: None,
            pipes: IdMap::default(),
            outbound: Outbound::default(),
            blocked: VecDeque::new(),
            rr: 0,
            shared,
            connected,
            resume,
            probe: RttProbe::default(),
            read_pipes: IdMap::default(),
            idle: routing
                .idle
                .map(|after| IdleClose::new(after, Instant::now())),
            used: 0,
            routing,
        }
    }

    /// Run until the session closes (a resumable session outlives its
    /// links: it waits for a new one while detached).
    pub(crate) async fn run(mut self, io: LinkPorts) -> Ended {
        let mut link = Some(self.attach(io));
        // One timer for the whole link, armed no later than the session's
        // next deadline. Deadlines mostly move later (every packet pushes
        // the keepalive and idle timeouts back), so the timer is only reset
        // when one moves earlier; when it fires early the session finds
        // nothing due and it is armed again. A fresh timer per turn would
        // take the runtime's timer lock twice for every packet.
        let timer = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(timer);
        let mut armed: Option<Instant> = None;
        let mut wake = Wakeups::new();
        self.w().wakers = Some((
            wake.waker(wakeups::WRITE).clone(),
            wake.waker(wakeups::KICK).clone(),
        ));
        let mut first = 0;
        let ended = loop {
            match self.dispatch_events() {
                Dispatch::Continue => {}
                Dispatch::Closed(reason) => {
                    self.shared.closed(&reason);
                    // A broken protocol is worth a warning on this side (the
                    // peer logs its own view); a clean close or a timeout is
                    // not. A refused admission is logged on both sides.
                    if reason.code == CloseCode::Unauthorized {
                        if reason.remote {
                            warn!(link = %self.link, "link refused by the peer: {}", reason.message);
                        } else {
                            warn!(link = %self.link, "link refused: {}", reason.message);
                        }
                    } else if !reason.remote
                        && !matches!(
                            reason.code,
                            CloseCode::Normal | CloseCode::IdleTimeout | CloseCode::NoSession
                        )
                    {
                        warn!(link = %self.link, "closing the link: {reason}");
                    }
                    break Ended {
                        reason: reason.to_string(),
                        was_connected: self.peer.is_some(),
                    };
                }
                Dispatch::Detached(reason) => {
                    link = None;
                    self.wire.take_out();
                    self.resume.detached = true;
                    self.shared.lost();
                    info!(
                        link = %self.link,
                        "link lost ({reason}); the session waits up to {:?} to resume",
                        self.resume.grace
                    );
                    self.resume.state(false);
                    if let Some(redial) = &self.resume.redial {
                        let _ = redial.send(());
                    }
                    continue;
                }
                Dispatch::ResumeRequested {
                    node,
                    peer_session,
                    session,
                    hello,
                } => {
                    let Some(incoming) = link.take() else {
                        continue;
                    };
                    let Some(io) = self.detach(incoming) else {
                        continue;
                    };
                    let state = self.shared.state();
                    let config = self.w().session.config().clone();
                    let handover = Handover {
                        io,
                        hello: Some(hello),
                        local: state.local,
                        remote: state.remote,
                        config,
                    };
                    match self.resume.find(session, node, peer_session) {
                        Some(tx) => match tx.send(handover) {
                            Ok(()) => {
                                debug!(link = %self.link, "link handed over to the session it resumes");
                                return Ended {
                                    reason: "handed over to a resumed session".into(),
                                    was_connected: false,
                                };
                            }
                            Err(back) => link = Some(self.attach(back.0.io)),
                        },
                        None => link = Some(self.attach(handover.io)),
                    }
                    wake.mark(wakeups::INPUT | wakeups::WRITE);
                    info!(link = %self.link, peer = %node.short(), "refusing to resume an unknown session");
                    self.w().session.refuse_resume(&format!(
                        "no session {session:#x} to resume here (the node restarted, or the grace period passed)"
                    ));
                    continue;
                }
            }
            self.probe_rtt();
            // Take the session's output (including what handling its
            // events just produced) while the link has room for it.
            let mut drained = true;
            let mut pending = false;
            {
                let w = &mut *self.w();
                if let Some(out) = w.out.as_mut() {
                    drained = out.fill(&mut w.session);
                    pending = out.has_pending();
                    if pending {
                        wake.mark(wakeups::WRITE);
                    }
                }
            }
            if pending {
                self.stalled_since.get_or_insert_with(Instant::now);
            } else {
                self.stalled_since = None;
            }
            // Input paused while the peer holds more of this node than the
            // budget: the session's idle timeout does not run meanwhile.
            if link.is_some() && self.over_budget(&wake) {
                if self.paused_since.is_none() {
                    let now = Instant::now();
                    self.paused_since = Some(now);
                    self.w().session.set_input_paused(now, true);
                }
            } else if self.paused_since.take().is_some() {
                self.w().session.set_input_paused(Instant::now(), false);
            }
            // Count what was just taken before it is written, so that the
            // peer cannot act on bytes this side does not show yet.
            self.publish_stats();
            // The session's next deadline, or the moment a peer that reads
            // nothing, or a pause of input, has lasted long enough.
            let (idle, timeout) = {
                let w = self.w();
                (w.session.config().idle_timeout, w.session.poll_timeout())
            };
            let stall = self.stalled_since.map(|since| since + idle);
            let paused = self.paused_since.map(|since| since + idle);
            let unused = self.note_idle();
            let next = [timeout, stall, paused, unused].into_iter().flatten().min();
            match next {
                Some(deadline) if armed.is_none_or(|at| deadline < at) => {
                    timer
                        .as_mut()
                        .reset(tokio::time::Instant::from_std(deadline));
                    armed = Some(deadline);
                    wake.mark(wakeups::TIMER);
                }
                Some(_) => {}
                None => armed = None,
            }
            self.w().armed = armed;
            // What this turn changed that only this driver knows of: a
            // call to serve, a pipe to read, the registry to watch.
            if self.serving.has_due() {
                wake.mark(wakeups::SERVING);
            }
            if self.outbound.take_added() {
                wake.mark(wakeups::OUTBOUND);
            }
            if std::mem::take(&mut self.watch_added) {
                wake.mark(wakeups::WATCH);
            }
            let woke = std::future::poll_fn(|cx| {
                wake.begin(cx);
                for k in 0..wakeups::COUNT {
                    let source = 1 << ((first + k) % wakeups::COUNT);
                    let polled = self.poll_source(
                        source,
                        &mut wake,
                        link.as_mut(),
                        timer.as_mut(),
                        armed.is_some(),
                    );
                    if let Poll::Ready(woke) = polled {
                        // A write that left nothing waiting, when the
                        // session had no more to give, leaves nothing for
                        // the loop to do: go on waiting.
                        if matches!(woke, Woke::Written(Ok(())))
                            && drained
                            && !self.w().out.as_ref().is_some_and(|o| o.has_pending())
                        {
                            // Everything was written: nothing is stalled.
                            self.stalled_since = None;
                            continue;
                        }
                        // It may have more: poll it again next time.
                        wake.mark(source);
                        return Poll::Ready(woke);
                    }
                }
                Poll::Pending
            })
            .await;
            // Start from the next source next time: no source starves the
            // others.
            first = (first + 1) % wakeups::COUNT;
            match woke {
                Woke::Input(Input::Closed) => {
                    if let Some(ended) = self.lost(&mut link, "the link closed") {
                        break ended;
                    }
                }
                Woke::Input(input) => {
                    // Read again: a pause, if the budget is spent again,
                    // starts anew at the top of the loop.
                    if self.paused_since.take().is_some() {
                        self.w().session.set_input_paused(Instant::now(), false);
                    }
                    if let Some(incoming) = link.as_mut() {
                        incoming.feed(&mut self.w().session, input);
                    }
                }
                Woke::Written(written) => {
                    // The link took bytes: it is not stalled.
                    self.stalled_since = None;
                    if written.is_err() {
                        // What the peer sent before the link broke comes
                        // first: a peer that closed its session and then
                        // its end ends the session with its Close (handled
                        // at the top of the loop), not a failed write.
                        if let Some(incoming) = link.as_mut() {
                            incoming.feed_ready(&self.wire, READ_AFTER_WRITE_FAILED);
                        }
                        if self.w().session.close_reason().is_some() {
                            continue;
                        }
                        if let Some(ended) = self.lost(&mut link, "the link's writer failed") {
                            break ended;
                        }
                    }
                }
                Woke::Handover(handover) => {
                    self.take_link(*handover, &mut link);
                    wake.mark(wakeups::INPUT | wakeups::WRITE);
                }
                Woke::Command(cmd) => {
                    let mut taken = self.take_command(cmd);
                    // Take what else is queued, so that its packets leave
                    // together in one write.
                    for _ in 1..COMMAND_BATCH {
                        if !self.blocked.is_empty() {
                            break;
                        }
                        let Ok(cmd) = self.commands.try_recv() else {
                            break;
                        };
                        taken += self.take_command(cmd);
                    }
                    // Room in the link's queue for senders, in one go.
                    self.queue.release(taken);
                }
                Woke::Reply(id, len, result) => {
                    self.serving_bytes -= len;
                    self.send_reply(id, result);
                }
                Woke::Local(pipe, frame) => {
                    self.on_local_frame(pipe, frame);
                    self.take_local_frames();
                }
                Woke::Registry(ev) => self.on_local_change(ev),
                Woke::Rung(rung) => {
                    // As if dropped mid-turn, as it was before the doorbell:
                    // `Drop` fails the calls and takes the peer's servers out.
                    if rung & signals::SHUTDOWN != 0 {
                        return Ended {
                            reason: "the node shut down".into(),
                            was_connected: true,
                        };
                    }
                    if rung & signals::CLOSED != 0 {
                        return Ended {
                            reason: super::CLOSED_HERE.into(),
                            was_connected: true,
                        };
                    }
                    // Before the peer is linked there is nothing to sync:
                    // linking announces everything as it then stands.
                    if rung & signals::POLICY != 0 && self.watch.is_some() {
                        self.resync_announcements();
                    }
                    if rung & signals::ROUTES != 0 {
                        self.resync_routes();
                    }
                    if rung & signals::ALLOW != 0 {
                        self.check_admission();
                    }
                }
                Woke::Kick => {}
                Woke::Timer => {
                    armed = None;
                    let now = Instant::now();
                    if self.idle_due(now) {
                        continue;
                    }
                    let budget = self.limits.budget;
                    let (stalled, paused) = (self.stalled_since, self.paused_since);
                    let w = &mut *self.w();
                    let idle = w.session.config().idle_timeout;
                    match (stalled, paused) {
                        (Some(since), _) if now >= since + idle => {
                            w.session.close_unread(now - since);
                        }
                        (_, Some(since)) if now >= since + idle => {
                            w.session.close_over_budget(now - since, budget);
                        }
                        _ => w.session.handle_timeout(now),
                    }
                }
            }
        };
        // Send what is left (the Close packet, if any) and end the stream.
        // Taken out of the lock for the last writes: senders no longer
        // write directly.
        let out = self.wire.take_out();
        if let Some(mut out) = out {
            out.finish(&self.wire).await;
        }
        self.shut_down(&ended.reason);
        ended
    }

    /// Poll `source` if it is due and may be polled now (a source that may
    /// not, such as commands while the session refuses them, stays due).
    /// A closed channel answers pending and is not due again: it is done.
    fn poll_source(
        &mut self,
        source: wakeups::Sources,
        wake: &mut Wakeups,
        link: Option<&mut Incoming>,
        timer: Pin<&mut tokio::time::Sleep>,
        armed: bool,
    ) -> Poll<Woke> {
        let may = match source {
            // Not read while the peer holds too much of this node: the
            // peer's writes stop when the socket's buffers are full.
            wakeups::INPUT => link.is_some() && !self.over_budget(wake),
            wakeups::WRITE => self.w().out.as_ref().is_some_and(|o| o.has_pending()),
            wakeups::COMMANDS => self.blocked.is_empty(),
            wakeups::SERVING => !self.serving.is_empty(),
            // Local pipe writers wait while the peer's windows, which it
            // chooses, let more pipe data queue for it than the budget.
            wakeups::OUTBOUND => {
                !self.outbound.is_empty()
                    && self.w().session.queued_pipe_bytes() <= self.limits.budget
            }
            wakeups::WATCH => self.watch.is_some(),
            wakeups::TIMER => armed,
            _ => true,
        };
        if !may {
            return Poll::Pending;
        }
        let Some(mut cx) = wake.take(source) else {
            return Poll::Pending;
        };
        let cx = &mut cx;
        match source {
            wakeups::INPUT => match link {
                Some(incoming) => incoming.poll_next(cx).map(Woke::Input),
                None => Poll::Pending,
            },
            wakeups::WRITE => match self.wire.write_once(self.w(), cx).1 {
                Some(written) => written.map(Woke::Written),
                None => Poll::Pending,
            },
            wakeups::RESUME => match self.resume.rx.poll_recv(cx) {
                Poll::Ready(Some(handover)) => Poll::Ready(Woke::Handover(Box::new(handover))),
                _ => Poll::Pending,
            },
            wakeups::COMMANDS => match self.commands.poll_recv(cx) {
                Poll::Ready(Some(cmd)) => Poll::Ready(Woke::Command(cmd)),
                _ => Poll::Pending,
            },
            wakeups::SERVING => self
                .serving
                .poll_next(cx)
                .map(|(id, len, result)| Woke::Reply(id, len, result)),
            wakeups::OUTBOUND => self
                .outbound
                .poll_next(cx)
                .map(|(pipe, frame)| Woke::Local(pipe, frame)),
            wakeups::WATCH => match self.watch.as_mut().map(|w| w.poll_next_unpin(cx)) {
                Some(Poll::Ready(Some(ev))) => Poll::Ready(Woke::Registry(ev)),
                _ => Poll::Pending,
            },
            wakeups::SIGNALS => self.signals.poll_rung(cx).map(Woke::Rung),
            wakeups::TIMER => timer.poll(cx).map(|()| Woke::Timer),
            wakeups::KICK => {
                if self.wire.take_kick() {
                    Poll::Ready(Woke::Kick)
                } else {
                    Poll::Pending
                }
            }
            _ => Poll::Pending,
        }
    }

    /// Whether the peer holds more of this node than the link budget
    /// allows: replies to its calls that wait for it to read them, or its
    /// casts not yet handled by local servers. If it is the casts, the
    /// input source is woken once they are handled.
    fn over_budget(&self, wake: &Wakeups) -> bool {
        self.w().session.queued_reply_bytes() + self.blocked_reply_bytes > self.limits.budget
            || self.casts.over(wake.waker(wakeups::INPUT))
    }

    /// The link is gone: a resumable session waits for another (its
    /// `Detached` event follows), any other ends here.
    fn lost(&mut self, link: &mut Option<Incoming>, reason: &str) -> Option<Ended> {
        let resumable = self.w().session.link_lost(Instant::now(), reason);
        if resumable {
            *link = None;
            self.wire.take_out();
            return None;
        }
        Some(Ended {
            reason: reason.into(),
            was_connected: self.peer.is_some(),
        })
    }

    /// A new link for this session: resume on it.
    fn take_link(&mut self, handover: Handover, link: &mut Option<Incoming>) {
        let name = handover.name();
        *link = Some(self.attach(handover.io));
        let moved = self
            .w()
            .session
            .set_link_kind(Instant::now(), &handover.config);
        if let Err(err) = moved {
            debug!(link = %self.link, "a new link came, but the session cannot move to it: {err}");
            *link = None;
            self.wire.take_out();
            return;
        }
        let resumed = self.w().session.resume(Instant::now(), handover.hello);
        match resumed {
            Ok(()) => {
                debug!(link = %self.link, new = %name, "resuming on a new link");
                self.link = name;
                self.shared.moved(handover.local, handover.remote);
            }
            Err(err) => {
                debug!(link = %self.link, "a new link came, but the session cannot resume: {err}");
                *link = None;
                self.wire.take_out();
            }
        }
    }

    /// The lock on what senders share with this driver.
    fn w(&self) -> std::sync::MutexGuard<'_, Wire> {
        self.wire.lock()
    }

    /// Take a link: its writer goes where senders write it, its reader
    /// stays with the driver.
    fn attach(&self, io: LinkPorts) -> Incoming {
        self.wire.put_out(io.outgoing);
        io.incoming
    }

    /// Give the link up (to a session it resumes): its two halves.
    fn detach(&self, incoming: Incoming) -> Option<LinkPorts> {
        let outgoing = self.wire.take_out()?;
        Some(LinkPorts { incoming, outgoing })
    }

    /// Act on every event the session has; returns the close reason once
    /// the session is over.
    fn dispatch_events(&mut self) -> Dispatch {
        // Count what came in before acting on it: a reply reaches its
        // caller after the bytes that carried it show in the counters.
        self.publish_stats();
        loop {
            // Taken all at once (the lock is not held while they are
            // handled: handling one may send to another link, or to this
            // one). What handling them adds comes after them.
            if self.events.is_empty() {
                self.wire.lock().session.take_events(&mut self.events);
            }
            let Some(ev) = self.events.pop_front() else {
                break;
            };
            // Gathered casts go before anything else the peer sent after
            // them; the server found for them is forgotten.
            if !matches!(ev, Event::Cast { .. }) {
                self.deliver_gathered();
                self.cast_target.clear();
            }
            match ev {
                Event::Closed { reason } => return Dispatch::Closed(reason),
                Event::Detached { reason } => {
                    // A stale one when the session already resumes on a
                    // newer link.
                    let w = &mut *self.w();
                    if w.session.awaiting_link() {
                        w.published.force(&self.shared, &w.session);
                        return Dispatch::Detached(reason);
                    }
                }
                Event::ResumeRequested {
                    node,
                    peer_session,
                    session,
                    hello,
                } => {
                    return Dispatch::ResumeRequested {
                        node,
                        peer_session,
                        session,
                        hello,
                    };
                }
                Event::Resumed => {
                    info!(link = %self.link, "link resumed: nothing lost");
                    self.resume.detached = false;
                    self.shared.resumed();
                    self.resume.state(true);
                }
                ev => self.on_event(ev),
            }
        }
        self.deliver_gathered();
        self.cast_target.clear();
        // What handling the events changed is published once the output
        // it produced is taken (see `run`).
        Dispatch::Continue
    }

    /// Send a round-trip probe if one is due (see `rtt_probe`).
    fn probe_rtt(&mut self) {
        if !self.w().session.is_connected() {
            return;
        }
        let now = Instant::now();
        let (due, give_up) = self.probe.due(now);
        if let Some(id) = give_up {
            self.w().session.cancel_call(id);
        }
        if due {
            let sent = self
                .w()
                .session
                .call(PROBE_NAME, Bytes::from_static(PROBE_PAYLOAD));
            if let Ok(id) = sent {
                self.probe.sent(id, now);
            }
        }
    }

    /// Whether something waits on the link: a call of this node not
    /// answered yet (its caller still waiting), a call of the peer being
    /// served, an open pipe, a message the session has not taken yet.
    fn busy(&self) -> bool {
        !self.serving.is_empty()
            || !self.pipes.is_empty()
            || !self.blocked.is_empty()
            || self.w().calls.values().any(|(_, reply)| !reply.is_closed())
    }

    /// Look at a directory link's use (see `idle_close`); when it is to
    /// be closed if nothing uses it meanwhile.
    fn note_idle(&mut self) -> Option<Instant> {
        self.idle?;
        let used = self.used + self.w().used;
        let busy = self.busy();
        let idle = self.idle.as_mut()?;
        idle.note(used, busy, Instant::now());
        Some(idle.deadline())
    }

    /// Close a directory link that nothing used for its idle time, with a
    /// Normal Close (the next lookup dials again). True if it closed.
    fn idle_due(&mut self, now: Instant) -> bool {
        if self.idle.is_none() || self.peer.is_none() || self.resume.detached {
            return false;
        }
        let used = self.used + self.w().used;
        let busy = self.busy();
        let Some(idle) = self.idle.as_mut() else {
            return false;
        };
        if !idle.due(used, busy, now) {
            return false;
        }
        let after = idle.after();
        debug!(link = %self.link, "closing a directory link unused for {after:?}");
        self.w()
            .session
            .close(&format!("a directory link unused for {after:?}"));
        true
    }

    /// Publish the session's counters, if bytes moved.
    fn publish_stats(&mut self) {
        self.wire.publish(&mut self.w());
    }

    /// The allow-list changed: drop the link if the peer's key is no
    /// longer on it (the peer is told why, and both sides log it).
    fn check_admission(&mut self) {
        self.admit(self.peer.as_ref().and_then(|p| p.key));
    }

    /// Whether the peer with `key` is still on the allow-list (always, on
    /// a link without keys or list); if not, the session closes and the
    /// peer is told why.
    fn admit(&mut self, key: Option<PublicKey>) -> bool {
        let (Some(list), Some(key)) = (&self.allow, key) else {
            return true;
        };
        if list.allows(&key) {
            return true;
        }
        self.w().session.revoke(&format!(
            "key {}… (node {}) was removed from the allow-list",
            key.short(),
            key.node_id().short()
        ));
        false
    }

    fn peer_node(&self) -> NodeId {
        self.peer.as_ref().map_or(self.kernel.node(), |p| p.node)
    }

    /// The peer, as seen by local servers.
    fn caller(&self) -> Caller {
        Caller {
            node: self.peer_node(),
            key: self.peer.as_ref().and_then(|p| p.key),
        }
    }

    /// Whether the peer may do `action` with the local server `name`;
    /// logs a refusal.
    fn permits(&self, name: &str, action: Action) -> bool {
        let caller = self.caller();
        let ok = self.policy.allows(name, action, &caller);
        if !ok && action != Action::Lookup {
            info!(link = %self.link, server = %name, "access denied: {caller} may not {} it", action.describe());
        }
        ok
    }

    /// Whether the reply to call `id` answers the round-trip probe (then
    /// the link's round trip is published).
    fn probe_answered(&mut self, id: CallId) -> bool {
        match self.probe.answered(id, Instant::now()) {
            Some(rtt) => {
                self.shared.set_rtt(rtt);
                true
            }
            None => false,
        }
    }

    fn denied(name: &str, action: Action) -> Error {
        Error::PermissionDenied {
            name: name.to_owned(),
            action: action.describe().to_owned(),
        }
    }

    /// Why the peer may not do `action` with `name`: it is read-only here,
    /// or the rules say no.
    fn refusal(&self, name: &str, action: Action) -> Error {
        if self.policy.is_read_only(&self.caller()) {
            Self::read_only_denied(name, action.describe())
        } else {
            Self::denied(name, action)
        }
    }

    /// A read-only peer may not `what` the server `name`.
    fn read_only_denied(name: &str, what: &str) -> Error {
        Error::PermissionDenied {
            name: name.to_owned(),
            action: format!(
                "{what} (the caller is read-only on this node: it may look up, watch and \
                 read pipes, not call, cast or write)"
            ),
        }
    }

    /// Hand the gathered casts, if any, to their server.
    fn deliver_gathered(&mut self) {
        if let Some((entry, batch)) = self.gathered.take() {
            self.deliver_casts(&entry, batch);
        }
    }

    /// Hand `batch`, casts from the peer, to the local server `entry`: one
    /// alone as a cast, more together; counted against the link budget
    /// until the server is done with them (`held_casts`).
    fn deliver_casts(&self, entry: &Entry, mut batch: Vec<Bytes>) {
        let endpoint = entry.endpoint();
        let delivered = with_caller_sync(self.caller(), || match batch.len() {
            1 => endpoint.try_cast(self.casts.hold(batch.swap_remove(0))),
            _ => {
                self.casts.hold_batch(&mut batch);
                endpoint.try_cast_batch(batch)
            }
        });
        if let Err(err) = delivered {
            debug!(link = %self.link, "casts from peer to {:?} failed: {err}", entry.name());
        }
    }

    fn on_event(&mut self, ev: Event) {
        if self.idle.is_some() && self.uses(&ev) {
            self.used += 1;
        }
        match ev {
            Event::Connected(peer) => {
                // The handshake checked the key when it arrived; the list
                // may have changed since, before this driver knew the peer
                // and could act on the change.
                if !self.admit(peer.key) {
                    return;
                }
                match &peer.key {
                    Some(key) => {
                        info!(link = %self.link, peer = %peer.node.short(), key = %key, "linked (encrypted)")
                    }
                    None => info!(link = %self.link, peer = %peer.node.short(), "linked"),
                }
                // Shown connected before anything is learned from or
                // served to the peer.
                self.shared.connected(peer.node);
                if let Some(tx) = self.connected.take() {
                    let _ = tx.send(peer.node);
                }
                if self.w().session.is_resumable() {
                    let ours = self.w().session.local().session_id;
                    self.resume.register(ours, peer.node, peer.session_id);
                }
                if self.routing.directory || peer.features & FEATURE_DIRECTORY != 0 {
                    self.routing.router.mark_directory_link(self.routing.link);
                }
                self.peer = Some(*peer);
                // The watch starts with every local entry: announce them.
                self.watch = Some(self.kernel.registry().watch());
                self.watch_added = true;
                // And the servers of other nodes this node reaches.
                self.resync_routes();
            }
            Event::PeerAnnounced(info) => {
                // The peer's own server: a one-hop route.
                let route = RouteInfo {
                    origin_id: info.id,
                    path: Arc::new([self.peer_node()]),
                    cost: 0,
                    pipe_frame: None,
                };
                self.learn(*info, route);
            }
            Event::PeerRouted(info, route) => self.learn(*info, route),
            Event::PeerWithdrew { id, reason } => {
                self.routing.router.forget(self.routing.link, id, reason)
            }
            Event::Cast { to, payload, trace } => {
                let now = Generations {
                    registry: self.kernel.registry().generation(),
                    policy: self.policy.generation(),
                };
                if trace.is_none()
                    && let Some(entry) = self.cast_target.get(&to, now)
                {
                    // The server the casts before it went to (no copy of
                    // its entry unless it starts a batch). The turn a
                    // lookup takes, for the groups looked up after.
                    self.rr = self.rr.wrapping_add(1);
                    if let Some((entry, batch)) = self.gathered.push(entry, payload) {
                        self.deliver_casts(&entry, batch);
                    }
                    return;
                }
                let Some(entry) = self.cast_entry(&to, now) else {
                    return;
                };
                if trace.is_none() {
                    if let Some((entry, batch)) = self.gathered.push(&entry, payload) {
                        self.deliver_casts(&entry, batch);
                    }
                    return;
                }
                // A traced cast goes alone, in its trace.
                self.deliver_gathered();
                let caller = self.caller();
                if let Err(err) = with_caller_sync(caller, || {
                    trace::deliver_sync("cast", &to, trace, || {
                        entry.endpoint().try_cast(self.casts.hold(payload))
                    })
                }) {
                    debug!(link = %self.link, "cast from peer to {to:?} failed: {err}");
                }
            }
            // A round-trip probe: answered at once, by the node itself.
            Event::Call { id, to, .. } if to == PROBE_NAME => self.send_reply(
                id,
                Err(RemoteError {
                    kind: RemoteErrorKind::NotFound,
                    message: "no server has the empty name (a round-trip probe)".into(),
                }),
            ),
            Event::Call { id, to, .. } if !self.permits(&to, Action::Call) => {
                let err = self.refusal(&to, Action::Call);
                self.send_reply(id, Err(to_remote(&err)))
            }
            Event::Call { id, .. } if self.serving_full() => {
                let busy = RemoteError {
                    kind: RemoteErrorKind::Busy,
                    message: format!(
                        "{} calls ({} bytes of requests) from this link are being served",
                        self.serving.len(),
                        self.serving_bytes
                    ),
                };
                self.send_reply(id, Err(busy));
            }
            Event::Call {
                id,
                to,
                payload,
                trace,
            } => match self.local_entry(&to) {
                Ok(entry) => {
                    let caller = self.caller();
                    let len = payload.len();
                    self.serving_bytes += len;
                    self.serving.push(Box::pin(async move {
                        let call = entry.endpoint().call(payload);
                        let call = trace::deliver("call", &to, trace, call);
                        let result = with_caller(caller, call).await;
                        (id, len, result.map_err(|e| to_remote(&e)))
                    }));
                }
                Err(err) => self.send_reply(id, Err(to_remote(&err))),
            },
            Event::Reply { id, .. } if self.probe_answered(id) => {}
            Event::Reply { id, result } => {
                let waiting = self.w().calls.remove(&id);
                if let Some((to, reply)) = waiting {
                    let _ = reply.send(result.map_err(|e| from_remote(&to, e)));
                }
            }
            Event::PipeOpened { id, server, port } => self.on_pipe_opened(id, server, port),
            Event::PipeData { id, .. } if self.read_pipes.contains_key(&id) => {
                let server = self.read_pipes.get(&id).cloned().unwrap_or_default();
                info!(link = %self.link, %server, "access denied: {} is read-only and may not write on a pipe", self.caller());
                self.fail_pipe(id, &Self::read_only_denied(&server, "write to"));
            }
            Event::PipeData { id, bytes } => {
                let delivered = self.pipes.get_mut(&id).map(|b| b.deliver(bytes));
                match delivered {
                    Some(Delivered::Now(n)) => {
                        let _ = self.w().session.pipe_consumed(id, n);
                    }
                    Some(Delivered::Queued) => {}
                    Some(Delivered::Refused(err)) => self.fail_pipe(id, &err),
                    Some(Delivered::Dropped) | None => {
                        debug!(link = %self.link, %id, "data for a pipe whose reader is gone");
                    }
                }
            }
            Event::PipeWritable { id } => self.pipe_resume(id),
            Event::PipeEnded { id } => {
                // The peer writes no more: the local reader gets what is
                // buffered, then end of stream.
                if let Some(b) = self.pipes.get_mut(&id) {
                    b.peer_ended();
                }
                self.maybe_close_pipe(id);
            }
            Event::PipeClosed { id, reason } => {
                debug!(link = %self.link, %id, %reason, "pipe closed by peer");
                // The local reader gets what is queued, then end of stream;
                // the local writers see the pipe closed.
                if let Some(mut bridge) = self.remove_pipe(id) {
                    bridge.drain_on_drop();
                }
            }
            Event::Writable => self.retry_blocked(),
            Event::Closed { .. }
            | Event::ResumeRequested { .. }
            | Event::Detached { .. }
            | Event::Resumed => {}
        }
    }

    /// Whether `ev` is a use of the link for its idle time: a message, not
    /// the round-trip probe, nor its answer, nor a registry update.
    fn uses(&self, ev: &Event) -> bool {
        match ev {
            Event::Call { to, .. } => to != PROBE_NAME,
            Event::Reply { id, .. } => !self.probe.is_out(*id),
            Event::Cast { .. }
            | Event::PipeOpened { .. }
            | Event::PipeData { .. }
            | Event::PipeEnded { .. }
            | Event::PipeClosed { .. } => true,
            _ => false,
        }
    }

    /// Whether a call from the peer is to be refused as busy: as many are
    /// served as `max_serving` allows, or their requests hold the budget.
    fn serving_full(&self) -> bool {
        self.serving.len() >= self.limits.max_serving || self.serving_bytes > self.limits.budget
    }

    /// Keep a command the session refused for later, counting a reply's
    /// bytes.
    fn push_blocked(&mut self, cmd: Command) {
        self.blocked_reply_bytes += reply_len(&cmd);
        self.blocked.push_back(cmd);
    }

    /// The session has room again: replay refused commands in order, and
    /// stop at the first one refused again (it stays first in line).
    fn retry_blocked(&mut self) {
        for _ in 0..self.blocked.len() {
            let Some(cmd) = self.blocked.pop_front() else {
                break;
            };
            self.blocked_reply_bytes -= reply_len(&cmd);
            let before = self.blocked.len();
            self.on_command(cmd);
            if self.blocked.len() > before {
                if let Some(again) = self.blocked.pop_back() {
                    self.blocked.push_front(again);
                }
                break;
            }
        }
    }

    /// The server for a message the peer sent: a local one, or one of
    /// another node this node forwards to (never back through the peer);
    /// round-robin over group members.
    fn local_entry(&mut self, name: &str) -> Result<Entry, Error> {
        self.pick_entry(name).map(|(entry, _)| entry)
    }

    /// The local server the peer's cast to `to` goes to, if the peer may
    /// cast to it and there is one (the refusal or the miss is logged), as
    /// [`permits`](Self::permits) and [`local_entry`](Self::local_entry)
    /// say; kept for the casts after it in this read (`cast_target`) when
    /// it is the only server under that name, with `now`, the generations
    /// read before.
    fn cast_entry(&mut self, to: &Name, now: Generations) -> Option<Entry> {
        if !self.permits(to, Action::Call) {
            return None;
        }
        match self.pick_entry(to) {
            Ok((entry, sole)) => {
                if sole {
                    self.cast_target.keep(&entry, now);
                }
                Some(entry)
            }
            Err(err) => {
                debug!(link = %self.link, "cast from peer dropped: {err}");
                None
            }
        }
    }

    /// [`local_entry`](Self::local_entry), and whether the entry is the
    /// only one under `name`, a server of this node (which a lookup finds
    /// again for as long as the registry's generation stays).
    fn pick_entry(&mut self, name: &str) -> Result<(Entry, bool), Error> {
        let local = self.kernel.node();
        self.rr = self.rr.wrapping_add(1);
        // Servers of this node only (the common case): picked under the
        // registry's lock, with no list built.
        let rr = self.rr;
        let picked = self.kernel.registry().with_members(name, |members| {
            (!members.is_empty() && members.iter().all(|e| e.node() == local))
                .then(|| (members[rr % members.len()].clone(), members.len() == 1))
        });
        if let Some(picked) = picked {
            return Ok(picked);
        }
        let peer = self.peer_node();
        let (router, link) = (&self.routing.router, self.routing.link);
        // Filtered in place, after the registry's lock is released: the
        // router has a lock of its own.
        let mut members = self.kernel.registry().lookup_all(name);
        members.retain(|e| {
            e.node() == local || (e.node() != peer && router.forwards(e.id().0, link, peer))
        });
        if members.is_empty() {
            return Err(Error::NotFound(name.to_owned()));
        }
        Ok((members[rr % members.len()].clone(), false))
    }

    fn on_local_change(&mut self, ev: RegistryEvent) {
        let local = self.kernel.node();
        match &ev {
            RegistryEvent::Added(e) if e.node() == local => self.announce(e),
            RegistryEvent::Removed { entry, reason } if entry.node() == local => {
                self.withdraw(entry.id().0, reason.clone())
            }
            // A routed server left: tell the peer why, as it happened.
            RegistryEvent::Removed { entry, reason } => {
                if self.exported.remove(&entry.id().0).is_some()
                    && let Err(err) = self.w().session.withdraw(entry.id().0, reason.clone())
                {
                    warn!(link = %self.link, "registry sync failed: {err}");
                }
            }
            _ => {}
        }
    }

    /// Announce a local entry, if the peer may look it up.
    fn announce(&mut self, e: &Entry) {
        let id = e.id().0;
        if self.announced.contains(&id) || !self.permits(e.name(), Action::Lookup) {
            return;
        }
        let result = self.w().session.announce(crate::wire::EntryInfo {
            id,
            name: e.shared_name().clone(),
            capabilities: e.shared_capabilities().clone(),
            group: e.is_group_member(),
        });
        match result {
            Ok(()) => {
                self.announced.insert(id);
            }
            Err(err) => warn!(link = %self.link, "registry sync failed: {err}"),
        }
    }

    fn withdraw(&mut self, id: u64, reason: ExitReason) {
        if self.announced.remove(&id)
            && let Err(err) = self.w().session.withdraw(id, reason)
        {
            warn!(link = %self.link, "registry sync failed: {err}");
        }
    }

    /// The access policy changed: announce what the peer may now see and
    /// withdraw what it may no longer see.
    fn resync_announcements(&mut self) {
        let local = self.kernel.node();
        for e in self.kernel.registry().entries() {
            if e.node() != local {
                continue;
            }
            if self.permits(e.name(), Action::Lookup) {
                self.announce(&e);
            } else if self.announced.contains(&e.id().0) {
                self.withdraw(
                    e.id().0,
                    ExitReason::Failed("hidden by the access policy".into()),
                );
            }
        }
        self.resync_routes();
    }

    /// Whether the peer takes forwarded entries.
    fn peer_routes(&self) -> bool {
        self.peer
            .as_ref()
            .is_some_and(|p| p.features & FEATURE_ROUTING != 0)
    }

    /// The peer announced `info` by `route`: a route to a server through
    /// this link.
    fn learn(&mut self, info: EntryInfo, route: RouteInfo) {
        let endpoint = Arc::new(RemoteEndpoint::new(
            info.name.clone(),
            self.peer_node(),
            self.commands_tx.clone(),
            self.queue.clone(),
            self.wire.clone(),
        ));
        let hop = Hop {
            link: self.routing.link,
            peer: self.peer_node(),
            cost: self.routing.cost,
            pipe_window: self.peer.as_ref().map_or(u32::MAX, |p| p.pipe_window),
        };
        self.routing.router.learn(hop, info, route, endpoint);
    }

    /// Announce to the peer the best route to every server of another node
    /// it may see (and does not reach better by itself), withdraw the
    /// ones that are gone.
    fn resync_routes(&mut self) {
        if !self.peer_routes() {
            return;
        }
        let exports = self
            .routing
            .router
            .exports(self.routing.link, self.peer_node());
        let mut keep = HashSet::new();
        for Export {
            id,
            entry,
            route,
            version,
        } in exports
        {
            if !self.permits(&entry.name, Action::Lookup) {
                continue;
            }
            keep.insert(id);
            if self.exported.get(&id) == Some(&version) {
                continue;
            }
            let announced = self.w().session.announce_route(entry, route);
            match announced {
                Ok(()) => {
                    self.exported.insert(id, version);
                }
                Err(err) => warn!(link = %self.link, "route sync failed: {err}"),
            }
        }
        let gone: Vec<u64> = self
            .exported
            .keys()
            .filter(|id| !keep.contains(id))
            .copied()
            .collect();
        for id in gone {
            self.exported.remove(&id);
            let reason = ExitReason::LinkDown("no route from the announcing node any more".into());
            if let Err(err) = self.w().session.withdraw(id, reason) {
                warn!(link = %self.link, "route sync failed: {err}");
            }
        }
    }

    fn send_reply(&mut self, id: CallId, result: Result<Bytes, crate::wire::RemoteError>) {
        let sent = self.w().session.reply(id, result.clone());
        match sent {
            Ok(()) => {}
            Err(Error::WireWouldBlock { .. }) => self.push_blocked(Command::Reply { id, result }),
            Err(err) => debug!(link = %self.link, "reply not sent: {err}"),
        }
    }

    /// A command out of the channel: it no longer counts against the
    /// link's send queue (the session's own queue bounds it from here).
    /// Returns what it counted there, for [`SendQueue::release`].
    fn take_command(&mut self, cmd: Command) -> usize {
        self.used += 1;
        let taken = match &cmd {
            Command::Cast { msg, .. } | Command::Call { msg, .. } => self.queue.taken(msg.len()),
            _ => 0,
        };
        self.on_command(cmd);
        taken
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Cast { to, msg, trace } => {
                let sent = self.w().take_cast(&to, &msg, trace);
                match sent {
                    Ok(()) => {}
                    Err(Error::WireWouldBlock { .. }) => {
                        self.push_blocked(Command::Cast { to, msg, trace })
                    }
                    Err(err) => debug!(link = %self.link, "cast to {to:?} not sent: {err}"),
                }
            }
            Command::Call {
                to,
                msg,
                trace,
                reply,
            } => {
                let taken = self.w().take_call(&to, &msg, trace, reply);
                match taken {
                    Taken::Done => {}
                    Taken::Failed(reply, err) => {
                        let _ = reply.send(Err(err));
                    }
                    Taken::Blocked(reply) => self.push_blocked(Command::Call {
                        to,
                        msg,
                        trace,
                        reply,
                    }),
                }
            }
            Command::OpenPipe {
                server,
                port,
                end,
                reply,
            } => {
                let opened = self.w().session.open_pipe(&server, &port);
                match opened {
                    Ok(id) => {
                        self.bridge(id, end);
                        let _ = reply.send(Ok(()));
                    }
                    Err(err) => {
                        let _ = reply.send(Err(err));
                    }
                }
            }
            Command::Reply { id, result } => self.send_reply(id, result),
            Command::PipeConsumed { pipe, n } => {
                let _ = self.w().session.pipe_consumed(pipe, n);
            }
            Command::PipeFailed { pipe, error } => self.fail_pipe(pipe, &error),
            Command::PipeInDone { pipe } => {
                if let Some(b) = self.pipes.get_mut(&pipe) {
                    b.in_done = true;
                }
                self.maybe_close_pipe(pipe);
            }
            Command::PipeAttached { pipe, result } => {
                if let Err(err) = result {
                    debug!(link = %self.link, %pipe, "pipe refused: {err}");
                    self.remove_pipe(pipe);
                    let _ = self
                        .w()
                        .session
                        .close_pipe(pipe, ExitReason::Failed(err.to_string()));
                }
            }
        }
    }

    /// Take the frames local pipe writers have ready now (up to
    /// [`COMMAND_BATCH`], while the peer's windows leave room), so that
    /// their packets leave together in one write. Nothing waits for more:
    /// a lone frame goes as it would alone.
    fn take_local_frames(&mut self) {
        // A waker that wakes nothing: the outbound source stays due (it
        // just gave a frame), so the run loop polls it again with its own
        // waker before it waits.
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        for _ in 1..COMMAND_BATCH {
            if self.outbound.is_empty() || self.w().session.queued_pipe_bytes() > self.limits.budget
            {
                break;
            }
            match self.outbound.poll_next(&mut cx) {
                Poll::Ready((pipe, frame)) => self.on_local_frame(pipe, frame),
                Poll::Pending => break,
            }
        }
    }

    /// A frame (or the end) from a local pipe reader, for the peer.
    fn on_local_frame(&mut self, pipe: PipeId, frame: Option<Bytes>) {
        self.used += 1;
        let Some(frame) = frame else {
            // Every local writer is gone and every frame was sent: tell
            // the peer (half-close), keep reading what it still sends.
            self.outbound.remove(pipe);
            if let Some(b) = self.pipes.get_mut(&pipe) {
                b.out_done = true;
                let _ = self.w().session.end_pipe(pipe);
            }
            self.maybe_close_pipe(pipe);
            return;
        };
        if !self.pipe_send(pipe, frame) {
            // Short of credit: stop polling this reader until the peer
            // grants more.
            let reader = self.outbound.remove(pipe);
            if let Some(b) = self.pipes.get_mut(&pipe) {
                b.parked = reader;
            }
        }
    }

    /// The peer granted credit: send the waiting frame, then poll the
    /// reader again.
    fn pipe_resume(&mut self, pipe: PipeId) {
        let Some(frame) = self.pipes.get_mut(&pipe).and_then(|b| b.waiting.take()) else {
            return;
        };
        if self.pipe_send(pipe, frame)
            && let Some(reader) = self.pipes.get_mut(&pipe).and_then(|b| b.parked.take())
        {
            self.outbound.insert(pipe, reader);
        }
    }

    /// Hand one frame to the session; false when it is short of credit
    /// (the frame then waits in the bridge) or the pipe is gone.
    fn pipe_send(&mut self, pipe: PipeId, frame: Bytes) -> bool {
        let sent = self.w().session.pipe_send(pipe, frame.clone());
        match sent {
            Ok(()) => true,
            Err(Error::WireWouldBlock { .. }) => {
                if let Some(b) = self.pipes.get_mut(&pipe) {
                    b.waiting = Some(frame);
                    self.shared.credit_stalled();
                }
                false
            }
            Err(err) => {
                self.fail_pipe(pipe, &err);
                false
            }
        }
    }

    /// A frame cannot go on: close the pipe both ways, telling the peer
    /// why (the local writers and reader see it closed).
    fn fail_pipe(&mut self, pipe: PipeId, err: &Error) {
        warn!(link = %self.link, %pipe, "pipe frame not passed on, closing the pipe: {err}");
        self.remove_pipe(pipe);
        let _ = self
            .w()
            .session
            .close_pipe(pipe, ExitReason::Failed(err.to_string()));
    }

    /// Forget a pipe: its reader is no longer polled, its tasks stop.
    fn remove_pipe(&mut self, pipe: PipeId) -> Option<Bridge> {
        self.outbound.remove(pipe);
        self.read_pipes.remove(&pipe);
        self.pipes.remove(&pipe)
    }

    /// Close a pipe once neither side has anything more to say: the local
    /// writers are done, and the local reader is gone or the peer ended.
    fn maybe_close_pipe(&mut self, pipe: PipeId) {
        if self
            .pipes
            .get(&pipe)
            .is_some_and(|b| b.out_done && (b.in_done || b.peer_ended))
            && let Some(mut bridge) = self.remove_pipe(pipe)
        {
            // Let the delivery task drain to the local reader; do not abort.
            bridge.drain_on_drop();
            let _ = self.w().session.close_pipe(pipe, ExitReason::Normal);
        }
    }

    fn on_pipe_opened(&mut self, id: PipeId, server: String, port: String) {
        if !self.permits(&server, Action::Pipe) {
            let err = Self::denied(&server, Action::Pipe);
            let _ = self
                .w()
                .session
                .close_pipe(id, ExitReason::Failed(err.to_string()));
            return;
        }
        let entry = match self.local_entry(&server) {
            Ok(entry) => entry,
            Err(err) => {
                let _ = self
                    .w()
                    .session
                    .close_pipe(id, ExitReason::Failed(err.to_string()));
                return;
            }
        };
        let (mine, theirs) = self.kernel.duplex();
        self.bridge(id, mine);
        let caller = self.caller();
        if self.policy.is_read_only(&caller) {
            self.read_pipes.insert(id, server);
        }
        let commands = self.commands_tx.clone();
        tokio::spawn(async move {
            let result = with_caller(caller, entry.endpoint().open_pipe(&port, theirs)).await;
            let _ = commands.send(Command::PipeAttached { pipe: id, result });
        });
    }

    /// Join the local pipe end `end` to the session's pipe `id`. Local
    /// writers are refused frames longer than the peer's pipe window, which
    /// the session could never send.
    fn bridge(&mut self, id: PipeId, end: PipeEnd) {
        let (reader, writer) = end.split();
        let window = self.w().session.peer().map(|p| p.pipe_window);
        if let Some(window) = window {
            reader.limit_frames(window as usize);
        }
        self.outbound.insert(id, reader);
        self.pipes
            .insert(id, Bridge::new(id, writer, self.commands_tx.clone()));
    }

    /// The link is over: the peer's servers leave the registry, our calls
    /// fail, pipes close.
    fn shut_down(&mut self, reason: &str) {
        info!(link = %self.link, "link down: {reason}");
        self.resume.unregister();
        let lapsed = self.resume.detached;
        let node = self.peer_node().short();
        let grace = self.resume.grace;
        let failed = |name: String| {
            if lapsed {
                Error::LinkNotResumed {
                    name,
                    node: node.clone(),
                    grace,
                    reason: reason.to_owned(),
                }
            } else {
                Error::ServerStopped {
                    name,
                    reason: format!("link down: {reason}"),
                }
            }
        };
        self.routing
            .router
            .forget_link(self.routing.link, ExitReason::LinkDown(reason.to_owned()));
        let calls = std::mem::take(&mut self.w().calls);
        for (_, (to, reply)) in calls {
            let _ = reply.send(Err(failed(to.to_string())));
        }
        for cmd in self.blocked.drain(..) {
            if let Command::Call { to, reply, .. } = cmd {
                let _ = reply.send(Err(failed(to.to_string())));
            }
        }
        self.pipes.clear();
        self.read_pipes.clear();
        self.outbound.clear();
        self.commands.close();
        // Senders waiting for room in the link's queue stop waiting.
        self.queue.close();
        let w = &mut *self.w();
        w.published.force(&self.shared, &w.session);
    }
}

/// The bytes a refused command counts against the link budget: those of
/// a reply (the peer's doing), nothing for this node's own casts and calls
/// (`max_queued` bounds those).
fn reply_len(cmd: &Command) -> usize {
    match cmd {
        Command::Reply { result: Ok(b), .. } => b.len(),
        Command::Reply { result: Err(e), .. } => e.message.len(),
        _ => 0,
    }
}

impl Drop for Driver {
    /// A driver dropped before it finished (the node shut down) still takes
    /// the peer's servers out of the registry as "link down" and fails the
    /// calls waiting on it.
    fn drop(&mut self) {
        self.resume.unregister();
        if !self.commands.is_closed() {
            self.shut_down("this node shut down");
        }
    }
}
