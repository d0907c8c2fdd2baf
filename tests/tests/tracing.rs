//! One trace across processes: OpenTelemetry spans exported over OTLP/HTTP
//! by three `oscloud-testnode` processes share one trace id, and their
//! parents link up.
//!
//! A chain over TCP: A and C are linked to B only. A calls `hop-c` (on C,
//! through B) in a `testnode.call` span; `hop-c` calls `upper-b` while it
//! handles the call. The test runs an OTLP/HTTP receiver (HTTP/1.1, the
//! protobuf body decoded with `opentelemetry-proto`) that every process
//! exports to (`--otlp`), and expects four spans of one trace:
//!
//! ```text
//! A testnode.call
//! └─ B call hop-c      (B forwards it)
//!    └─ C call hop-c   (hop-c handles it)
//!       └─ B call upper-b
//! ```
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use oscloud_tests::TestNode;
use prost::Message;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

const BIN: &str = env!("CARGO_BIN_EXE_oscloud-testnode");

/// One exported span: the service that sent it, its name, ids and parent.
#[derive(Debug, Clone)]
struct Got {
    service: String,
    name: String,
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
    parent: Vec<u8>,
}

type Spans = Arc<Mutex<Vec<Got>>>;

/// An OTLP/HTTP receiver on 127.0.0.1: every POST body is an
/// `ExportTraceServiceRequest`; its spans go into the returned list.
async fn receiver() -> (String, Spans) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let spans: Spans = Arc::default();
    let keep = spans.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve(stream, keep.clone()));
        }
    });
    (url, spans)
}

/// Answer the requests of one connection (keep-alive) with 200.
async fn serve(stream: TcpStream, spans: Spans) {
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    loop {
        let mut len = 0usize;
        let mut line = String::new();
        loop {
            line.clear();
            if read.read_line(&mut line).await.unwrap_or(0) == 0 {
                return;
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                len = v.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; len];
        read.read_exact(&mut body).await.unwrap();
        let req = ExportTraceServiceRequest::decode(&body[..]).expect("an OTLP trace request");
        for rs in req.resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.as_ref()?.value.as_ref())
                .map(|v| match v {
                    Value::StringValue(s) => s.clone(),
                    other => format!("{other:?}"),
                })
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for s in ss.spans {
                    spans.lock().unwrap().push(Got {
                        service: service.clone(),
                        name: s.name,
                        trace_id: s.trace_id,
                        span_id: s.span_id,
                        parent: s.parent_span_id,
                    });
                }
            }
        }
        let ok =
            "HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
        if write.write_all(ok.as_bytes()).await.is_err() {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_follows_a_call_chain_across_three_processes() {
    let (url, spans) = receiver().await;
    let otlp = ["--otlp", url.as_str()];
    let mut b = TestNode::start(
        Path::new(BIN),
        "b",
        &[&["--listen", "tcp://127.0.0.1:0"][..], &otlp].concat(),
    )
    .await;
    let b_tcp = b.listening[0].clone();
    let mut a = TestNode::start(
        Path::new(BIN),
        "a",
        &[&["--connect", b_tcp.as_str()][..], &otlp].concat(),
    )
    .await;
    let mut c = TestNode::start(
        Path::new(BIN),
        "c",
        &[
            &["--connect", b_tcp.as_str(), "--hop-to", "upper-b"][..],
            &otlp,
        ]
        .concat(),
    )
    .await;
    assert!(a.ask("wait hop-c").await.starts_with("found hop-c"));
    assert!(c.ask("wait upper-b").await.starts_with("found upper-b"));
    assert_eq!(
        a.ask("tracedcall hop-c hello").await,
        "reply c>HELLO from b"
    );
    // Each process sends what it still holds when it quits.
    for n in [&mut a, &mut b, &mut c] {
        n.quit().await;
    }

    let names = [
        ("testnode-a", "testnode.call"),
        ("testnode-b", "call hop-c"),
        ("testnode-c", "call hop-c"),
        ("testnode-b", "call upper-b"),
    ];
    let find = |all: &[Got], (service, name): (&str, &str)| {
        all.iter()
            .find(|g| g.service == service && g.name == name)
            .cloned()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let got = loop {
        let all = spans.lock().unwrap().clone();
        let got: Vec<Option<Got>> = names.iter().map(|n| find(&all, *n)).collect();
        if got.iter().all(Option::is_some) {
            break got.into_iter().flatten().collect::<Vec<Got>>();
        }
        assert!(
            Instant::now() < deadline,
            "not every span was exported: {all:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    for g in &got {
        println!(
            "{:<11} {:<14} trace {} span {} parent {}",
            g.service,
            g.name,
            hex(&g.trace_id),
            hex(&g.span_id),
            hex(&g.parent)
        );
    }
    let [call, forward, serve, nested] = &got[..] else {
        unreachable!()
    };
    for g in &got {
        assert_eq!(g.trace_id, call.trace_id, "one trace: {got:#?}");
    }
    assert!(call.parent.is_empty(), "A's span is the root: {call:?}");
    assert_eq!(forward.parent, call.span_id, "B's forward under A's call");
    assert_eq!(serve.parent, forward.span_id, "C's under B's forward");
    assert_eq!(nested.parent, serve.span_id, "B's upper-b under C's hop-c");
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
