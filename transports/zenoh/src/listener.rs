//! Incoming links: a node listening as `<node>` in `<cloud>` holds a
//! liveliness token for its presence and a queryable that takes link
//! requests; a task answers them (each in a task of its own, so a slow
//! dialler holds up no one) and hands the links that come up to
//! [`ZenohLinks::accept`].

use std::sync::Arc;

use async_trait::async_trait;
use oscloud_core::Error;
use oscloud_core::address::Address;
use oscloud_core::directory::Directory;
use oscloud_core::transport::{Link, Listener};
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinSet};
use tracing::{Instrument, info_span, warn};
use zenoh::Session;
use zenoh::handlers::FifoChannelHandler;
use zenoh::liveliness::LivelinessToken;
use zenoh::query::{Query, Queryable};

use crate::directory::ZenohDirectory;
use crate::keys::{self, Side};
use crate::link::{Ends, failed, spawn_link};
use crate::{HANDSHAKE_TIMEOUT, Target};

/// Links that came up wait here for `accept`.
const BACKLOG: usize = 16;

/// A `zenoh://` listener. Dropping it stops its task and withdraws its
/// token and queryable; links already made go on.
pub(crate) struct ZenohLinks {
    links: mpsc::Receiver<Link>,
    address: Address,
    task: AbortHandle,
    /// The cloud's directory, if the address asked for it.
    directory: Option<Arc<dyn Directory>>,
}

impl Drop for ZenohLinks {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ZenohLinks {
    /// Be reachable as `target.node` in `target.cloud` through `session`;
    /// [`Error::AddressInUse`] if a node is already.
    pub(crate) async fn bind(session: Session, target: Target) -> Result<Box<dyn Listener>, Error> {
        let presence = keys::node(&target.cloud, &target.node);
        let present = session
            .liveliness()
            .get(presence.clone())
            .timeout(HANDSHAKE_TIMEOUT)
            .await
            .map_err(|e| failed(&target, "zenoh liveliness query", e))?;
        if present.recv_async().await.is_ok() {
            return Err(Error::AddressInUse {
                address: target.addr.to_string(),
            });
        }
        let queryable = session
            .declare_queryable(keys::accept(&target.cloud, &target.node))
            .complete(true)
            .await
            .map_err(|e| failed(&target, "zenoh queryable", e))?;
        let token = session
            .liveliness()
            .declare_token(presence)
            .await
            .map_err(|e| failed(&target, "zenoh liveliness token", e))?;
        let directory = target.directory.then(|| {
            let d: Arc<dyn Directory> =
                Arc::new(ZenohDirectory::new(session.clone(), target.clone()));
            d
        });
        let (tx, links) = mpsc::channel(BACKLOG);
        let address = target.addr.clone();
        let span = info_span!("zenoh listener", at = %address);
        let task = tokio::spawn(serve(session, target, queryable, token, tx).instrument(span));
        Ok(Box::new(ZenohLinks {
            links,
            address,
            task: task.abort_handle(),
            directory,
        }))
    }
}

/// Take link requests until `accept`'s side is gone; `_token` stays
/// declared as long as this runs.
async fn serve(
    session: Session,
    target: Target,
    queryable: Queryable<FifoChannelHandler<Query>>,
    _token: LivelinessToken,
    links: mpsc::Sender<Link>,
) {
    let mut handshakes = JoinSet::new();
    loop {
        tokio::select! {
            query = queryable.recv_async() => {
                let Ok(query) = query else {
                    warn!("the zenoh queryable closed");
                    return;
                };
                let (session, target) = (session.clone(), target.clone());
                handshakes.spawn(async move {
                    match answer(&session, &target, query).await {
                        Ok(link) => Some(link),
                        Err(why) => {
                            warn!("link request refused: {why}");
                            None
                        }
                    }
                });
            }
            Some(done) = handshakes.join_next() => {
                if let Ok(Some(link)) = done
                    && links.send(link).await.is_err()
                {
                    return;
                }
            }
        }
    }
}

/// Take one link request: declare this side of the link it names, say
/// yes, and wait for the dialler's side.
async fn answer(session: &Session, target: &Target, query: Query) -> Result<Link, String> {
    let id = query
        .payload()
        .map(|p| p.to_bytes().into_owned())
        .and_then(|p| String::from_utf8(p).ok())
        .filter(|id| keys::valid_link_id(id));
    let Some(id) = id else {
        let why = "a link request must carry a link id of 16 hex digits";
        let _ = query.reply_err(why).await;
        return Err(why.into());
    };
    let ends = Ends::declare(session, target, &id, Side::Listener)
        .await
        .map_err(|e| e.to_string())?;
    query
        .reply(query.key_expr().clone(), "ok")
        .await
        .map_err(|e| format!("answering the request: {e}"))?;
    drop(query);
    ends.wait_peer(target).await.map_err(|e| e.to_string())?;
    let remote = format!("zenoh://{}/{id}", target.cloud);
    Ok(spawn_link(ends, target.addr.to_string(), remote, &id))
}

#[async_trait]
impl Listener for ZenohLinks {
    /// Cancel-safe: a link not returned stays for the next call.
    async fn accept(&mut self) -> Result<Link, Error> {
        self.links.recv().await.ok_or_else(|| Error::Io {
            address: self.address.to_string(),
            kind: std::io::ErrorKind::BrokenPipe,
            message: "the zenoh listener stopped".into(),
        })
    }

    fn local_address(&self) -> Address {
        self.address.clone()
    }

    fn directory(&self) -> Option<Arc<dyn Directory>> {
        self.directory.clone()
    }
}
