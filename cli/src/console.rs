//! The live web console of `oscloud run --console ADDR`.
//!
//! A small HTTP/1.1 server (GET only, one request per connection) serves
//! the single-page app embedded in this binary (`cli/assets/console/`,
//! built from `clients/console/` with esbuild and committed) and relays
//! WebSocket upgrades of `/oscloud` to a `ws://127.0.0.1:PORT/oscloud`
//! listener of one node of the run (the console node). The page joins
//! that node with the TypeScript client (`@oscloud/client`) as a node of
//! its own, so everything it shows comes over the wire protocol: the
//! registry (watched), the control servers' status (polled every second),
//! calls, casts, taps and pipes.
//!
//! Safe by default:
//!
//! - The console binds a loopback address unless it has both TLS (a
//!   certificate and key: it then serves HTTPS and `wss://`) and an access
//!   token; any other address without them is refused ([`check_address`]).
//! - With an access token (`--console-token`, or `OSCLOUD_CONSOLE_TOKEN`),
//!   every request needs it: `/?token=T` once (the answer sets an
//!   `HttpOnly`, `SameSite=Strict` cookie), the cookie afterwards.
//! - Every answer carries a strict Content-Security-Policy (scripts and
//!   connections to this origin only), and a WebSocket upgrade whose
//!   `Origin` is not this console's origin is refused (no cross-site
//!   WebSocket hijacking from another page of the browser).

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, warn};

use crate::Error;

/// The page.
const INDEX_HTML: &[u8] = include_bytes!("../assets/console/index.html");
/// The app: the TypeScript client, xterm.js and the views, in one file.
const CONSOLE_JS: &[u8] = include_bytes!("../assets/console/console.js");
/// The app's styles (xterm.js's included).
const CONSOLE_CSS: &[u8] = include_bytes!("../assets/console/console.css");

/// The path the page opens its WebSocket on (relayed to the console node).
pub const WS_PATH: &str = "/oscloud";

/// The environment variable that can hold the access token.
pub const TOKEN_ENV: &str = "OSCLOUD_CONSOLE_TOKEN";

/// The cookie that carries the access token after the first page load.
const COOKIE: &str = "oscloud_console";

/// The largest request head taken.
const MAX_HEAD: usize = 16 * 1024;

/// How long a client has to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// The Content-Security-Policy of every answer. xterm.js writes a
/// `<style>` element for its theme, hence `'unsafe-inline'` for styles
/// (never for scripts).
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
     connect-src 'self'; img-src 'self' data:; font-src 'self' data:; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// What the console serves.
#[derive(Clone)]
pub struct Console {
    /// The node the page joins.
    pub node: String,
    /// Every node of the topology (drawn even before they answer).
    pub nodes: Vec<String>,
    /// The console node's WebSocket listener (loopback).
    pub backend: SocketAddr,
    /// The access token, if one is required.
    pub token: Option<String>,
    /// TLS (HTTPS and `wss://`), if configured
    /// ([`oscloud_transport_ws::tls_acceptor`]).
    pub tls: Option<oscloud_transport_ws::TlsAcceptor>,
    /// The console's node id when it is read-only (`--console-read-only`):
    /// the page joins with it, and the console node's access policy names
    /// it read-only ([`oscloud_core::access`]).
    pub read_only: Option<oscloud_core::NodeId>,
}

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console")
            .field("node", &self.node)
            .field("nodes", &self.nodes)
            .field("backend", &self.backend)
            .field("token", &self.token.as_ref().map(|_| "…"))
            .field("tls", &self.tls.is_some())
            .field("read_only", &self.read_only)
            .finish()
    }
}

/// Refuse a console address that is not loopback unless the console has
/// TLS and an access token.
pub fn check_address(addr: SocketAddr, tls: bool, token: bool) -> Result<(), Error> {
    if addr.ip().is_loopback() || tls && token {
        return Ok(());
    }
    let missing = match (tls, token) {
        (false, false) => {
            "TLS (--console-tls-cert, --console-tls-key) and an access token (--console-token)"
        }
        (false, true) => "TLS (--console-tls-cert, --console-tls-key)",
        _ => "an access token (--console-token)",
    };
    Err(Error::Usage(format!(
        "the console binds {addr}, not a loopback address: that needs TLS and an access \
         token, and {missing} is missing (or bind 127.0.0.1:{port} and reach it through \
         an SSH tunnel: ssh -L {port}:127.0.0.1:{port} HOST)",
        port = addr.port()
    )))
}

/// A free loopback port for the console node's WebSocket listener, and
/// its address `ws://127.0.0.1:PORT/oscloud`.
pub fn backend_address() -> Result<(SocketAddr, String), Error> {
    let probe = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    let at = probe.local_addr()?;
    drop(probe);
    Ok((at, format!("ws://{at}{WS_PATH}")))
}

/// Bind the console's address (after [`check_address`]).
pub async fn bind(addr: SocketAddr, console: &Console) -> Result<TcpListener, Error> {
    check_address(addr, console.tls.is_some(), console.token.is_some())?;
    TcpListener::bind(addr)
        .await
        .map_err(|e| Error::Start(format!("console: cannot listen on {addr}: {e}")))
}

/// Serve the console on `listener` until dropped (each connection in a
/// task of its own).
pub async fn serve(listener: TcpListener, console: Console) {
    let console = Arc::new(console);
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let console = console.clone();
                tokio::spawn(async move {
                    let done = match &console.tls {
                        Some(tls) => {
                            match tokio::time::timeout(HEAD_TIMEOUT, tls.accept(stream)).await {
                                Ok(Ok(stream)) => handle(stream, &console).await,
                                Ok(Err(e)) => Err(e.into()),
                                Err(_) => Err(Error::Usage("no TLS handshake in time".into())),
                            }
                        }
                        None => handle(stream, &console).await,
                    };
                    if let Err(e) = done {
                        debug!(%peer, "console: {e}");
                    }
                });
            }
            Err(e) => {
                warn!("console: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// A parsed request head.
#[derive(Debug, Default, PartialEq, Eq)]
struct Head {
    method: String,
    path: String,
    query_token: Option<String>,
    cookie_token: Option<String>,
    host: Option<String>,
    origin: Option<String>,
    upgrade: bool,
    /// Where the head ends in the bytes read.
    len: usize,
}

/// Parse a request head from `buf`: `Ok(None)` while incomplete.
fn parse_head(buf: &[u8]) -> Result<Option<Head>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("bad request: {e}")),
    };
    let target = req.path.unwrap_or("/");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let query_token = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("token="))
        .map(percent_decode);
    let mut head = Head {
        method: req.method.unwrap_or("").to_owned(),
        path: path.to_owned(),
        query_token,
        len,
        ..Head::default()
    };
    for h in req.headers.iter() {
        let value = String::from_utf8_lossy(h.value).trim().to_owned();
        match h.name.to_ascii_lowercase().as_str() {
            "host" => head.host = Some(value),
            "origin" => head.origin = Some(value),
            "upgrade" => head.upgrade = value.eq_ignore_ascii_case("websocket"),
            "cookie" => {
                head.cookie_token = value.split(';').find_map(|c| {
                    c.trim()
                        .strip_prefix(&format!("{COOKIE}="))
                        .map(str::to_owned)
                })
            }
            _ => {}
        }
    }
    Ok(Some(head))
}

/// `%XX` and `+` decoding of a query value.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match b[i] {
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(u8::try_from(h * 16 + l).unwrap_or(b'?'));
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Equality that takes as long whatever the first difference.
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// What to answer to a request head.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    /// A file or document: status, content type, body, extra headers.
    Body(u16, &'static str, Vec<u8>, Vec<String>),
    /// Relay the connection to the console node's WebSocket listener.
    Relay,
}

fn text(status: u16, body: &str) -> Answer {
    Answer::Body(
        status,
        "text/plain; charset=utf-8",
        body.as_bytes().to_vec(),
        Vec::new(),
    )
}

/// Decide what to answer (no I/O, for tests).
fn answer(head: &Head, console: &Console) -> Answer {
    if head.method != "GET" {
        return text(405, "only GET\n");
    }
    let mut set_cookie = Vec::new();
    if let Some(token) = &console.token {
        let by_query = head
            .query_token
            .as_deref()
            .is_some_and(|t| same_secret(t, token));
        let by_cookie = head
            .cookie_token
            .as_deref()
            .is_some_and(|t| same_secret(t, token));
        if !by_query && !by_cookie {
            return text(
                401,
                "this console needs its access token: open /?token=TOKEN\n",
            );
        }
        if by_query {
            set_cookie.push(format!(
                "Set-Cookie: {COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict"
            ));
        }
    }
    match head.path.as_str() {
        WS_PATH if head.upgrade => {
            // Only pages of this console may open the node's WebSocket.
            let same_origin = match (&head.origin, &head.host) {
                (Some(o), Some(h)) => {
                    o.strip_prefix("http://")
                        .or_else(|| o.strip_prefix("https://"))
                        == Some(h)
                }
                (None, _) => true,
                (Some(_), None) => false,
            };
            if same_origin {
                Answer::Relay
            } else {
                text(403, "cross-origin WebSocket refused\n")
            }
        }
        "/" | "/index.html" => Answer::Body(
            200,
            "text/html; charset=utf-8",
            INDEX_HTML.to_vec(),
            set_cookie,
        ),
        "/console.js" => Answer::Body(
            200,
            "text/javascript; charset=utf-8",
            CONSOLE_JS.to_vec(),
            set_cookie,
        ),
        "/console.css" => Answer::Body(
            200,
            "text/css; charset=utf-8",
            CONSOLE_CSS.to_vec(),
            set_cookie,
        ),
        "/config.json" => {
            let config = serde_json::json!({
                "node": console.node,
                "nodes": console.nodes,
                "ws": WS_PATH,
                "readOnly": console.read_only.is_some(),
                "identity": console.read_only.map(|id| id.to_string()),
            });
            Answer::Body(
                200,
                "application/json",
                config.to_string().into_bytes(),
                set_cookie,
            )
        }
        _ => text(404, "not found\n"),
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Bad Request",
    }
}

async fn handle<S>(mut stream: S, console: &Console) -> Result<(), Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf = Vec::with_capacity(1024);
    let head = tokio::time::timeout(HEAD_TIMEOUT, async {
        loop {
            let mut chunk = [0u8; 2048];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(Error::Usage("connection closed before the request".into()));
            }
            buf.extend_from_slice(&chunk[..n]);
            match parse_head(&buf) {
                Ok(Some(h)) => return Ok(Ok(h)),
                Ok(None) if buf.len() < MAX_HEAD => {}
                Ok(None) => return Ok(Err("request head too large".to_owned())),
                Err(e) => return Ok(Err(e)),
            }
        }
    })
    .await
    .map_err(|_| Error::Usage("no request head in time".into()))??;
    let head = match head {
        Ok(h) => h,
        Err(e) => {
            write_answer(&mut stream, text(400, &format!("{e}\n"))).await?;
            return Ok(());
        }
    };
    match answer(&head, console) {
        Answer::Relay => relay(stream, &buf, head.len, console.backend).await,
        a => write_answer(&mut stream, a).await,
    }
}

async fn write_answer<S>(stream: &mut S, answer: Answer) -> Result<(), Error>
where
    S: AsyncWrite + Unpin,
{
    let Answer::Body(status, content_type, body, extra) = answer else {
        return Ok(());
    };
    let mut head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Content-Security-Policy: {CSP}\r\nX-Content-Type-Options: nosniff\r\n\
         Referrer-Policy: no-referrer\r\nCache-Control: no-store\r\nConnection: close\r\n",
        reason(status),
        body.len()
    );
    for h in extra {
        head.push_str(&h);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(&body).await?;
    stream.shutdown().await?;
    Ok(())
}

/// Hand the connection to the console node's WebSocket listener: the
/// request line is rewritten to its path (no query: the token stays
/// here), the rest goes through as it is, both ways.
async fn relay<S>(
    mut client: S,
    read: &[u8],
    head_len: usize,
    backend: SocketAddr,
) -> Result<(), Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut node = TcpStream::connect(backend).await?;
    let line_end = read
        .windows(2)
        .position(|w| w == b"\r\n")
        .unwrap_or(head_len);
    let mut first = format!("GET {WS_PATH} HTTP/1.1").into_bytes();
    first.extend_from_slice(&read[line_end..]);
    node.write_all(&first).await?;
    tokio::io::copy_bidirectional(&mut client, &mut node).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn console(token: Option<&str>) -> Console {
        Console {
            node: "a".into(),
            nodes: vec!["a".into(), "b".into()],
            backend: SocketAddr::from((Ipv4Addr::LOCALHOST, 1)),
            token: token.map(str::to_owned),
            tls: None,
            read_only: None,
        }
    }

    fn head(text: &str) -> Head {
        parse_head(text.as_bytes())
            .expect("valid")
            .expect("complete")
    }

    fn status(a: &Answer) -> u16 {
        match a {
            Answer::Body(s, ..) => *s,
            Answer::Relay => 101,
        }
    }

    #[test]
    fn loopback_or_tls_and_a_token() {
        let at = |s: &str| s.parse::<SocketAddr>().expect("addr");
        assert!(check_address(at("127.0.0.1:7781"), false, false).is_ok());
        assert!(check_address(at("[::1]:7781"), false, false).is_ok());
        let err = check_address(at("0.0.0.0:7781"), false, false).expect_err("refused");
        assert!(
            err.to_string().contains("needs TLS and an access token"),
            "{err}"
        );
        let err = check_address(at("192.168.1.5:80"), true, false).expect_err("refused");
        assert!(
            err.to_string()
                .contains("an access token (--console-token) is missing"),
            "{err}"
        );
        let err = check_address(at("192.168.1.5:80"), false, true).expect_err("refused");
        assert!(
            err.to_string()
                .contains("TLS (--console-tls-cert, --console-tls-key) is missing"),
            "{err}"
        );
        assert!(check_address(at("0.0.0.0:7781"), true, true).is_ok());
    }

    #[test]
    fn serves_the_app_with_a_csp() {
        let c = console(None);
        let a = answer(&head("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), &c);
        assert_eq!(status(&a), 200);
        let a = answer(&head("GET /config.json HTTP/1.1\r\n\r\n"), &c);
        let Answer::Body(_, _, body, _) = a else {
            panic!("a body")
        };
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(v["node"], "a");
        assert_eq!(v["ws"], WS_PATH);
        assert_eq!(
            status(&answer(&head("GET /etc/passwd HTTP/1.1\r\n\r\n"), &c)),
            404
        );
        assert_eq!(status(&answer(&head("POST / HTTP/1.1\r\n\r\n"), &c)), 405);
        assert!(CSP.contains("script-src 'self'"));
    }

    #[test]
    fn the_token_is_required_by_query_or_cookie() {
        let c = console(Some("s3cret"));
        assert_eq!(status(&answer(&head("GET / HTTP/1.1\r\n\r\n"), &c)), 401);
        assert_eq!(
            status(&answer(&head("GET /?token=wrong HTTP/1.1\r\n\r\n"), &c)),
            401
        );
        let a = answer(&head("GET /?token=s3cret HTTP/1.1\r\n\r\n"), &c);
        let Answer::Body(200, _, _, extra) = a else {
            panic!("ok")
        };
        assert!(extra[0].starts_with("Set-Cookie: oscloud_console=s3cret;"));
        let by_cookie = "GET /console.js HTTP/1.1\r\nCookie: a=b; oscloud_console=s3cret\r\n\r\n";
        assert_eq!(status(&answer(&head(by_cookie), &c)), 200);
        let ws = "GET /oscloud HTTP/1.1\r\nUpgrade: websocket\r\n\r\n";
        assert_eq!(status(&answer(&head(ws), &c)), 401);
    }

    #[test]
    fn websocket_only_from_the_console_origin() {
        let c = console(None);
        let ok = "GET /oscloud HTTP/1.1\r\nHost: 127.0.0.1:7781\r\nOrigin: http://127.0.0.1:7781\r\nUpgrade: websocket\r\n\r\n";
        assert_eq!(answer(&head(ok), &c), Answer::Relay);
        let evil = "GET /oscloud HTTP/1.1\r\nHost: 127.0.0.1:7781\r\nOrigin: http://evil.example\r\nUpgrade: websocket\r\n\r\n";
        assert_eq!(status(&answer(&head(evil), &c)), 403);
    }

    #[test]
    fn partial_and_bad_heads() {
        assert_eq!(parse_head(b"GET / HTTP/1.1\r\nHost"), Ok(None));
        assert!(parse_head(b"\x00\x01 garbage\r\n\r\n").is_err());
        assert_eq!(percent_decode("a%20b+c%2"), "a b c%2");
    }
}
