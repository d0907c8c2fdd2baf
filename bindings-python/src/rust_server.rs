//! A Rust server that a Python node can host in its own process
//! (`oscloud._native._rust_echo`), so the tests can check Python callers
//! against a Rust `oscloud-actors` server, and a Rust server calling a
//! Python one, without a second process.
//!
//! Requests are lists of strings (MessagePack arrays of strings, as Rust's
//! `Vec<String>`), replies are strings:
//!
//! | request | reply |
//! |---|---|
//! | `["upper", text]` | `text` upper-cased, then ` from rust` |
//! | `["call", server, text]` | `server`'s reply to the call `text` (a string), prefixed `rust got: ` |
//! | `["whoami"]` | the caller's node id, ` key ` and its public key (or `none`); `local` for a caller on this node |
//! | `["fail", text]` | a failure with the reason `text` (its supervisor restarts it) |

use std::time::Duration;

use std::sync::Arc;

use oscloud_actors::{
    ChildSpec, Context, Server, ServerError, ServerRef, Strategy, Supervisor, SupervisorSpec,
    async_trait,
};
use pyo3::prelude::*;

use crate::Error;
use crate::node::PyNode;
use crate::runtime;

/// The Rust test server (see the module docs).
#[derive(Debug, Clone, Copy)]
struct RustEcho;

#[async_trait]
impl Server for RustEcho {
    type Request = Vec<String>;
    type Reply = String;
    type State = ();

    async fn init(&self, _ctx: &mut Context) -> Result<(), ServerError> {
        Ok(())
    }

    async fn handle_call(
        &self,
        ctx: &mut Context,
        _: &mut (),
        req: Vec<String>,
    ) -> Result<String, ServerError> {
        let words: Vec<&str> = req.iter().map(String::as_str).collect();
        match words.as_slice() {
            ["upper", text] => Ok(format!("{} from rust", text.to_uppercase())),
            ["call", server, text] => {
                let reply: String = ServerRef::lookup(ctx.kernel(), server)?
                    .typed::<String, String>()
                    .call(&(*text).to_owned(), Duration::from_secs(5))
                    .await?;
                Ok(format!("rust got: {reply}"))
            }
            ["whoami"] => Ok(match ctx.caller() {
                Some(c) => format!(
                    "{} key {}",
                    c.node,
                    c.key.map_or_else(|| "none".to_owned(), |k| k.to_string())
                ),
                None => "local".to_owned(),
            }),
            ["fail", text] => Err((*text).to_owned().into()),
            _ => Err(format!("bad request {req:?}").into()),
        }
    }
}

/// Register the Rust test server `name` on `node`'s kernel, under a
/// supervisor (one-for-one, up to 10 restarts in 5 s) that `node.stop()`
/// stops. It runs on the node's tokio runtime, like any Rust server. For
/// tests and examples.
#[pyfunction]
pub(crate) fn _rust_echo(py: Python<'_>, node: &PyNode, name: String) -> PyResult<()> {
    let kernel = node.kernel().clone();
    let spec = SupervisorSpec::new(format!("rust-supervisor:{name}"))
        .unregistered()
        .strategy(Strategy::OneForOne)
        .intensity(10, Duration::from_secs(5))
        .child(ChildSpec::server(name, || RustEcho));
    let started = runtime::block_on(py, Supervisor::start(&kernel, spec))?;
    node.keep(Arc::new(started.map_err(Error::from)?));
    Ok(())
}
