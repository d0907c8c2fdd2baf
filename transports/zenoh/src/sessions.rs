//! The zenoh sessions of one [`ZenohTransport`](crate::ZenohTransport):
//! one per router (and configuration file), shared by every link and
//! listener that goes through it.

use std::collections::HashMap;

use oscloud_core::Error;
use tokio::sync::Mutex;
use tracing::info;
use zenoh::Session;

use crate::{Target, invalid};

/// What a session is opened for: the router and the configuration file.
type SessionKey = (Option<String>, Option<String>);

/// Open sessions, keyed by router and configuration file.
#[derive(Default)]
pub(crate) struct Sessions {
    open: Mutex<HashMap<SessionKey, Session>>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions").finish_non_exhaustive()
    }
}

impl Sessions {
    /// The session for `target`'s router, opened if there is none yet (or
    /// the one there was is closed).
    pub(crate) async fn get(&self, target: &Target) -> Result<Session, Error> {
        let key = (target.router.clone(), target.config.clone());
        let mut open = self.open.lock().await;
        if let Some(session) = open.get(&key)
            && !session.is_closed()
        {
            return Ok(session.clone());
        }
        let config = config(target)?;
        let session = zenoh::open(config).await.map_err(|e| Error::Unreachable {
            address: target.addr.to_string(),
            reason: format!("no zenoh session: {e}"),
        })?;
        info!(zid = %session.zid(), router = ?target.router, "zenoh session open");
        open.insert(key, session.clone());
        Ok(session)
    }
}

/// The zenoh configuration for `target`: the file it names, or a client
/// of its router with multicast scouting off; the router in the address
/// replaces the file's connect endpoints.
fn config(target: &Target) -> Result<zenoh::Config, Error> {
    let bad = |what: String| invalid(&target.addr, what);
    let mut config = match &target.config {
        Some(path) => zenoh::Config::from_file(path)
            .map_err(|e| bad(format!("zenoh configuration file {path:?}: {e}")))?,
        None => {
            let mut config = zenoh::Config::default();
            for (key, value) in [
                ("mode", r#""client""#),
                ("scouting/multicast/enabled", "false"),
            ] {
                config
                    .insert_json5(key, value)
                    .map_err(|e| bad(format!("zenoh setting {key}: {e}")))?;
            }
            config
        }
    };
    if let Some(router) = &target.router {
        config
            .insert_json5("connect/endpoints", &format!("[{router:?}]"))
            .map_err(|e| bad(format!("zenoh router endpoint {router}: {e}")))?;
    }
    Ok(config)
}
