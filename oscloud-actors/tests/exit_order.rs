//! A failing server leaves the registry before its owned tasks (and what
//! they hold, such as pipe ends) are let go of: whoever sees such a pipe
//! end can already tell that the server failed.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::time::Duration;

use oscloud_actors::{Context, PipeOutcome, Server, ServerError, ServerRef, async_trait, start};
use oscloud_core::{ExitReason, Kernel, PipeEnd, RegistryEvent};

struct Holder;

#[async_trait]
impl Server for Holder {
    type Request = bool;
    type Reply = ();
    type State = ();

    async fn init(&self, _ctx: &mut Context) -> Result<(), ServerError> {
        Ok(())
    }

    async fn handle_call(
        &self,
        _ctx: &mut Context,
        _state: &mut (),
        fail: bool,
    ) -> Result<(), ServerError> {
        if fail {
            return Err("asked to fail".into());
        }
        Ok(())
    }

    async fn handle_pipe(
        &self,
        ctx: &mut Context,
        _state: &mut (),
        _port: String,
        end: PipeEnd,
    ) -> Result<PipeOutcome, ServerError> {
        // An owned task holds the pipe until the server stops.
        ctx.spawn(async move {
            let _end = end;
            std::future::pending::<()>().await;
        });
        Ok(PipeOutcome::Accepted)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_entry_leaves_before_the_owned_pipes_end() {
    for _ in 0..50 {
        let kernel = Kernel::new();
        let _h = start(&kernel, "holder", Holder).await.unwrap();
        let mut watch = kernel.registry().watch();
        let server = ServerRef::new(&kernel, "holder");
        let (mut reader, _writer) = server.open_pipe("p").await.unwrap().split();
        let _ = server
            .typed::<bool, ()>()
            .call(&true, Duration::from_secs(5))
            .await;
        let end = tokio::time::timeout(Duration::from_secs(5), reader.recv())
            .await
            .unwrap();
        assert!(end.is_none());
        // The pipe has ended: the removal, with its reason, is already there.
        assert!(kernel.registry().lookup("holder").is_err());
        let mut failed = false;
        while let Some(event) = watch.try_next() {
            if let RegistryEvent::Removed { reason, .. } = event {
                failed = matches!(reason, ExitReason::Failed(why) if why.contains("asked to fail"));
            }
        }
        assert!(failed);
    }
}
