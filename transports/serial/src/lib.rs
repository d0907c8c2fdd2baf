//! # oscloud-transport-serial: serial-line links for oscloud nodes
//!
//! Addresses: `serial:///dev/ttyUSB0?baud=115200&data_bits=8&parity=none&stop_bits=1&flow=none`
//! (three slashes, an absolute device path). Every parameter is optional:
//!
//! | key | values | default |
//! |-----|--------|---------|
//! | `baud` | 1 to 4 000 000 | `115200` |
//! | `data_bits` | `5`, `6`, `7`, `8` | `8` |
//! | `parity` | `none`, `odd`, `even` | `none` |
//! | `stop_bits` | `1`, `2` | `1` |
//! | `flow` | `none`, `software`, `hardware` | `none` |
//! | `reopen_ms` | 0 to 3 600 000 | `0` |
//!
//! A bad value or an unknown key is an
//! [`InvalidAddress`](oscloud_core::Error::InvalidAddress) error that names
//! the key.
//!
//! A serial link is a
//! [`LossyStream`](oscloud_core::transport::LinkKind::LossyStream): the wire
//! protocol frames it with COBS + CRC-32, drops and counts damaged frames and
//! retransmits (see `docs/PROTOCOL.md` §2.2).
//!
//! ## Point to point: listen or connect, either works
//!
//! A serial port has no listener and no dialler: there is one peer at the
//! other end of the cable. So both operations open the port:
//!
//! - [`connect`](Transport::connect) opens the port and returns one link.
//!   When it goes down, a node that dialled reopens the port with backoff
//!   (the node's usual re-dial), so the link comes back with the device.
//! - [`listen`](Transport::listen) opens the port at once (so a missing
//!   device or a bad parameter is reported by `listen`) and its listener
//!   yields that one link. The next `accept` waits until that link is gone
//!   (both halves dropped), then reopens the port, retrying with backoff
//!   (50 ms doubling to 1 s) while the device is absent, and yields the new
//!   link.
//!
//! Either side of a cable can therefore "listen" or "connect"; the wire
//! session is symmetric. A link goes down when a read or write fails (an
//! unplugged USB adapter, a pty whose other side closed) or when the device
//! file disappears (checked once a second), and otherwise by the session's
//! idle timeout.
//!
//! ## Riding out an unplug: `reopen_ms`
//!
//! With `reopen_ms=N` (N > 0), a link whose device is lost does not go down
//! at once: it keeps trying to reopen the device (50 ms doubling to 1 s) for
//! up to N ms. Bytes written meanwhile are lost, as on a line with nobody at
//! the other end, and reads wait. If the device comes back in time, the link
//! goes on over it and the wire session never ends: its retransmission
//! re-sends what was lost, so calls and pipe transfers in progress complete
//! without loss or duplication (tested: a 4 MiB pipe across two unplugs of
//! 300 and 500 ms). Keep N below the node's `idle_timeout`, which ends the
//! session anyway when nothing is heard for that long. If the device that
//! comes back is another one (a board that reset, another board), its new
//! session's Hello closes the old session and the link restarts as usual.
//!
//! ```no_run
//! use std::sync::Arc;
//! use oscloud_core::transport::Transports;
//! use oscloud_core::{Kernel, Node};
//! use oscloud_transport_serial::SerialTransport;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), oscloud_core::Error> {
//! let transports = Transports::new().with(Arc::new(SerialTransport));
//! let node = Node::new(Kernel::new(), transports);
//! let peer = node.connect(&"serial:///dev/ttyUSB0?baud=115200".parse()?).await?;
//! println!("linked to {peer}");
//! # Ok(())
//! # }
//! ```
//!
//! Parsing and validation need no device:
//!
//! ```
//! use oscloud_transport_serial::{Parity, SerialSettings};
//!
//! let s = SerialSettings::from_address(&"serial:///dev/ttyS0?baud=9600&parity=even".parse()?)?;
//! assert_eq!((s.baud, s.parity), (9600, Parity::Even));
//! let err = SerialSettings::from_address(&"serial:///dev/ttyS0?stop_bits=3".parse()?).unwrap_err();
//! assert!(err.to_string().contains("stop_bits"));
//! # Ok::<(), oscloud_core::Error>(())
//! ```
#![doc(test(attr(deny(warnings))))]

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use oscloud_core::Error;
use oscloud_core::address::Address;
use oscloud_core::transport::{Link, LinkKind, Listener, Transport, io_error};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::oneshot;
use tokio_serial::SerialPortBuilderExt;
pub use tokio_serial::SerialStream;
use tracing::{debug, info};

/// The URI scheme of this transport.
pub const SCHEME: &str = "serial";

/// The parameters an address may carry.
pub const PARAMS: &[&str] = &[
    "baud",
    "data_bits",
    "parity",
    "stop_bits",
    "flow",
    "reopen_ms",
];

/// Most bytes read from a port at once: what the Linux tty layer hands out
/// in one read (its line discipline buffers 4 KiB).
const READ_CHUNK: usize = 4096;
/// Most bytes gathered from several buffers into one write: one system
/// call for many small frames instead of one each.
const WRITE_GATHER: usize = 64 * 1024;
/// How often a link checks that its device file still exists.
const PRESENCE_CHECK: Duration = Duration::from_secs(1);
/// First and longest wait between attempts to reopen a listened port.
const REOPEN_MIN: Duration = Duration::from_millis(50);
const REOPEN_MAX: Duration = Duration::from_secs(1);

/// Parity checking of each character.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parity {
    /// No parity bit.
    None,
    /// Odd parity.
    Odd,
    /// Even parity.
    Even,
}

/// Flow control.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// None.
    None,
    /// XON/XOFF in band. Only for links whose bytes never contain 0x11 or
    /// 0x13, which is not the case of COBS frames: avoid it.
    Software,
    /// RTS/CTS lines.
    Hardware,
}

/// The settings of a serial port, as an address gives them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SerialSettings {
    /// The device, e.g. `/dev/ttyUSB0`.
    pub path: PathBuf,
    /// Bits per second.
    pub baud: u32,
    /// Bits per character: 5 to 8.
    pub data_bits: u8,
    /// Parity.
    pub parity: Parity,
    /// Stop bits: 1 or 2.
    pub stop_bits: u8,
    /// Flow control.
    pub flow: Flow,
    /// How long a link rides out a lost device (unplugged, I/O error) by
    /// reopening it, before it goes down; zero: it goes down at once.
    pub reopen: Duration,
}

fn invalid(addr: &Address, reason: impl Into<String>) -> Error {
    Error::InvalidAddress {
        input: addr.to_string(),
        reason: reason.into(),
    }
}

/// A parameter that must be one of `choices`.
fn choice<T: Copy>(
    addr: &Address,
    key: &str,
    default: T,
    choices: &[(&str, T)],
) -> Result<T, Error> {
    let Some(v) = addr.param(key) else {
        return Ok(default);
    };
    choices
        .iter()
        .find(|(name, _)| *name == v)
        .map(|(_, c)| *c)
        .ok_or_else(|| {
            let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
            invalid(
                addr,
                format!(
                    "parameter {key}={v:?} is not valid: expected one of {}",
                    names.join(", ")
                ),
            )
        })
}

impl SerialSettings {
    /// Read and check the settings of a `serial://` address.
    pub fn from_address(addr: &Address) -> Result<Self, Error> {
        if addr.scheme() != SCHEME {
            return Err(invalid(addr, "not a serial:// address"));
        }
        addr.check_params(PARAMS)?;
        if !addr.host().is_empty() || addr.port_or_text().is_some() {
            return Err(invalid(
                addr,
                "a serial address is serial:///dev/... (three slashes, no host)",
            ));
        }
        let path = Path::new(addr.path());
        if !path.is_absolute() {
            return Err(Error::BadPath {
                address: addr.to_string(),
                reason: "the device path must be absolute".into(),
            });
        }
        let baud = addr.param_parse::<u32>("baud")?.unwrap_or(115_200);
        if !(1..=4_000_000).contains(&baud) {
            return Err(invalid(
                addr,
                format!("parameter baud={baud} is not valid: expected 1 to 4000000"),
            ));
        }
        let data_bits = choice(
            addr,
            "data_bits",
            8,
            &[("5", 5), ("6", 6), ("7", 7), ("8", 8)],
        )?;
        let parity = choice(
            addr,
            "parity",
            Parity::None,
            &[
                ("none", Parity::None),
                ("odd", Parity::Odd),
                ("even", Parity::Even),
            ],
        )?;
        let stop_bits = choice(addr, "stop_bits", 1, &[("1", 1), ("2", 2)])?;
        let flow = choice(
            addr,
            "flow",
            Flow::None,
            &[
                ("none", Flow::None),
                ("software", Flow::Software),
                ("hardware", Flow::Hardware),
            ],
        )?;
        let reopen_ms = addr.param_parse::<u64>("reopen_ms")?.unwrap_or(0);
        if reopen_ms > 3_600_000 {
            return Err(invalid(
                addr,
                format!("parameter reopen_ms={reopen_ms} is not valid: expected 0 to 3600000"),
            ));
        }
        Ok(Self {
            path: path.to_owned(),
            baud,
            data_bits,
            parity,
            stop_bits,
            flow,
            reopen: Duration::from_millis(reopen_ms),
        })
    }

    fn builder(&self) -> tokio_serial::SerialPortBuilder {
        use tokio_serial::{DataBits, FlowControl, StopBits};
        tokio_serial::new(self.path.to_string_lossy(), self.baud)
            .data_bits(match self.data_bits {
                5 => DataBits::Five,
                6 => DataBits::Six,
                7 => DataBits::Seven,
                _ => DataBits::Eight,
            })
            .parity(match self.parity {
                Parity::None => tokio_serial::Parity::None,
                Parity::Odd => tokio_serial::Parity::Odd,
                Parity::Even => tokio_serial::Parity::Even,
            })
            .stop_bits(if self.stop_bits == 2 {
                StopBits::Two
            } else {
                StopBits::One
            })
            .flow_control(match self.flow {
                Flow::None => FlowControl::None,
                Flow::Software => FlowControl::Software,
                Flow::Hardware => FlowControl::Hardware,
            })
    }
}

/// Open the port of `addr` with its settings (raw mode: no echo, no line
/// editing, no character translation).
fn open(addr: &Address, settings: &SerialSettings) -> Result<SerialStream, Error> {
    settings.builder().open_native_async().map_err(|e| {
        use tokio_serial::ErrorKind as K;
        match e.kind {
            K::NoDevice => Error::BadPath {
                address: addr.to_string(),
                reason: format!("cannot open the device: {}", e.description),
            },
            K::InvalidInput => invalid(addr, e.description),
            K::Io(kind) => io_error(addr, &io::Error::new(kind, e.description)),
            K::Unknown => Error::LinkFailed {
                address: addr.to_string(),
                reason: e.description,
            },
        }
    })
}

/// Serial-line links (`serial:///dev/...`).
#[derive(Debug, Clone, Copy, Default)]
pub struct SerialTransport;

impl SerialTransport {
    /// A link over a port opened elsewhere, e.g. one end of
    /// [`SerialStream::pair`] (a pseudo-terminal pair, for tests and
    /// benchmarks). `local` and `remote` describe it in logs.
    pub fn link_from(
        stream: SerialStream,
        local: impl Into<String>,
        remote: impl Into<String>,
    ) -> Link {
        link(stream, None, local.into(), remote.into(), None, None)
    }
}

/// One opened port as a link. `alive` is dropped with the last half. With
/// `reopen` (address and settings), a lost device is reopened for up to
/// `settings.reopen` before the link fails.
fn link(
    stream: SerialStream,
    path: Option<&Path>,
    local: String,
    remote: String,
    alive: Option<oneshot::Sender<()>>,
    reopen: Option<(Address, SerialSettings)>,
) -> Link {
    let mut check = tokio::time::interval(PRESENCE_CHECK);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let port = Arc::new(Mutex::new(Port {
        stream: Some(stream),
        path: path.map(Path::to_owned),
        check,
        reopen: reopen.filter(|(_, s)| !s.reopen.is_zero()),
        outage: None,
        failed: false,
        gather: Vec::new(),
        scratch: Box::new([0; READ_CHUNK]),
    }));
    let alive = Arc::new(alive);
    let reader = PortReader {
        port: port.clone(),
        _alive: alive.clone(),
    };
    let writer = PortWriter {
        port,
        _alive: alive,
    };
    Link::stream(LinkKind::LossyStream, local, remote, reader, writer)
}

#[async_trait]
impl Transport for SerialTransport {
    fn scheme(&self) -> &'static str {
        SCHEME
    }

    async fn connect(&self, addr: &Address) -> Result<Link, Error> {
        let settings = SerialSettings::from_address(addr)?;
        let stream = open(addr, &settings)?;
        debug!(%addr, "serial port opened");
        Ok(link(
            stream,
            Some(&settings.path.clone()),
            addr.to_string(),
            "serial peer".into(),
            None,
            Some((addr.clone(), settings)),
        ))
    }

    async fn listen(&self, addr: &Address) -> Result<Box<dyn Listener>, Error> {
        let settings = SerialSettings::from_address(addr)?;
        let stream = open(addr, &settings)?;
        debug!(%addr, "serial port opened (listening)");
        Ok(Box::new(SerialLinks {
            address: addr.clone(),
            settings,
            first: Some(stream),
            current: None,
        }))
    }
}

/// The listener of a serial address: one link at a time.
struct SerialLinks {
    address: Address,
    settings: SerialSettings,
    /// The port opened by `listen`, not yet handed out.
    first: Option<SerialStream>,
    /// Resolves when the link handed out last is gone.
    current: Option<oneshot::Receiver<()>>,
}

#[async_trait]
impl Listener for SerialLinks {
    async fn accept(&mut self) -> Result<Link, Error> {
        if let Some(current) = self.current.as_mut() {
            // Wait until the link handed out is dropped (cancel-safe: the
            // receiver stays in place).
            let _ = current.await;
            self.current = None;
        }
        let stream = match self.first.take() {
            Some(s) => s,
            None => {
                let mut wait = REOPEN_MIN;
                loop {
                    match open(&self.address, &self.settings) {
                        Ok(s) => break s,
                        Err(err) => {
                            debug!(address = %self.address, "reopen failed: {err}; next try in {wait:?}");
                            tokio::time::sleep(wait).await;
                            wait = (wait * 2).min(REOPEN_MAX);
                        }
                    }
                }
            }
        };
        let (tx, rx) = oneshot::channel();
        self.current = Some(rx);
        Ok(link(
            stream,
            Some(&self.settings.path),
            self.address.to_string(),
            "serial peer".into(),
            Some(tx),
            Some((self.address.clone(), self.settings.clone())),
        ))
    }

    fn local_address(&self) -> Address {
        self.address.clone()
    }
}

/// A device lost while the link rides it out.
struct Outage {
    since: Instant,
    wait: Duration,
    next_try: Pin<Box<tokio::time::Sleep>>,
}

/// The port behind both halves of a link.
struct Port {
    /// `None` while the device is lost.
    stream: Option<SerialStream>,
    /// The device file, checked for presence.
    path: Option<PathBuf>,
    check: tokio::time::Interval,
    /// Where and how to reopen a lost device, if the link rides outages.
    reopen: Option<(Address, SerialSettings)>,
    outage: Option<Outage>,
    /// The device was lost for good: the link is down.
    failed: bool,
    /// Where several buffers are gathered into one write (kept to reuse
    /// its allocation).
    gather: Vec<u8>,
    /// What one read lands in (zeroed once, not before every read).
    scratch: Box<[u8; READ_CHUNK]>,
}

fn gone(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, what.to_owned())
}

impl Port {
    /// Write `buf` to the port; while a lost device is being reopened the
    /// bytes are dropped (reported written).
    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if self.failed {
            return Poll::Ready(Err(gone("the serial device is gone")));
        }
        let Some(stream) = self.stream.as_mut() else {
            return Poll::Ready(Ok(buf.len()));
        };
        match Pin::new(stream).poll_write(cx, buf) {
            Poll::Ready(Err(err)) => {
                if self.lost(&err) {
                    Poll::Ready(Ok(buf.len()))
                } else {
                    Poll::Ready(Err(err))
                }
            }
            other => other,
        }
    }

    /// The device was lost with `err`: ride it out if configured to (true),
    /// else the link fails.
    fn lost(&mut self, err: &io::Error) -> bool {
        self.stream = None;
        if self.reopen.is_none() {
            self.failed = true;
            return false;
        }
        if self.outage.is_none() {
            info!(path = ?self.path, "serial device lost ({err}); reopening");
            self.outage = Some(Outage {
                since: Instant::now(),
                wait: REOPEN_MIN,
                next_try: Box::pin(tokio::time::sleep(REOPEN_MIN)),
            });
        }
        true
    }

    /// Try to reopen a lost device when its next attempt is due: Ready(Ok)
    /// once it is back, Ready(Err) once the grace time is over.
    fn poll_reopen(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let (Some(outage), Some((addr, settings))) = (self.outage.as_mut(), self.reopen.as_ref())
        else {
            return Poll::Ready(Ok(()));
        };
        loop {
            if outage.next_try.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            match open(addr, settings) {
                Ok(stream) => {
                    info!(%addr, "serial device back after {:?}", outage.since.elapsed());
                    self.stream = Some(stream);
                    self.outage = None;
                    self.check.reset();
                    return Poll::Ready(Ok(()));
                }
                Err(err) if outage.since.elapsed() >= settings.reopen => {
                    info!(%addr, "serial device still gone after {:?}: {err}", settings.reopen);
                    self.failed = true;
                    return Poll::Ready(Err(gone("the serial device is gone")));
                }
                Err(err) => {
                    debug!(%addr, "reopen failed: {err}");
                    outage.wait = (outage.wait * 2).min(REOPEN_MAX);
                    let deadline = tokio::time::Instant::now() + outage.wait;
                    outage.next_try.as_mut().reset(deadline);
                }
            }
        }
    }
}

fn lock(port: &Mutex<Port>) -> std::sync::MutexGuard<'_, Port> {
    port.lock().unwrap_or_else(|e| e.into_inner())
}

/// The read half of a link. Fails once the device is lost (for good, if
/// the link rides outages).
struct PortReader {
    port: Arc<Mutex<Port>>,
    _alive: Arc<Option<oneshot::Sender<()>>>,
}

impl AsyncRead for PortReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut guard = lock(&self.port);
        let port = &mut *guard;
        loop {
            if port.failed {
                return Poll::Ready(Err(gone("the serial device is gone")));
            }
            if port.outage.is_some() {
                match port.poll_reopen(cx) {
                    Poll::Ready(Ok(())) => continue,
                    other => return other,
                }
            }
            // Poll the check until it is pending, so its timer wakes us for
            // the next one even when no byte arrives.
            let mut missing = false;
            if let Some(path) = &port.path {
                while !missing && port.check.poll_tick(cx).is_ready() {
                    missing = !path.exists();
                }
            }
            if missing {
                let err = gone("the serial device file disappeared");
                if port.lost(&err) {
                    continue;
                }
                return Poll::Ready(Err(err));
            }
            let Some(stream) = port.stream.as_mut() else {
                return Poll::Ready(Err(gone("the serial port is closed")));
            };
            // Read into the port's own small buffer, then copy what came:
            // the port zeroes all the room it is given before each read,
            // and a driver's receive buffer is large (hundreds of KiB).
            let room = buf.remaining().min(READ_CHUNK);
            let mut part = ReadBuf::new(&mut port.scratch[..room]);
            let res = Pin::new(stream).poll_read(cx, &mut part);
            let got = part.filled().len();
            buf.put_slice(part.filled());
            let err = match res {
                Poll::Ready(Ok(())) if got == 0 && room > 0 => gone("the serial line hung up"),
                Poll::Ready(Err(e)) => e,
                other => return other,
            };
            if port.lost(&err) {
                continue;
            }
            return Poll::Ready(Err(err));
        }
    }
}

/// The write half of a link. While a lost device is being reopened, bytes
/// written are lost, as on a line with nobody at the end; the session
/// re-sends them.
struct PortWriter {
    port: Arc<Mutex<Port>>,
    _alive: Arc<Option<oneshot::Sender<()>>>,
}

impl AsyncWrite for PortWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        lock(&self.port).poll_write(cx, buf)
    }

    /// Several buffers (a driver's queued frames) go out in one write of
    /// up to [`WRITE_GATHER`] bytes, copied together first: a port has no
    /// vectored write, and a system call per small frame costs more.
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let mut guard = lock(&self.port);
        let port = &mut *guard;
        let mut nonempty = bufs.iter().filter(|b| !b.is_empty());
        let (Some(first), true) = (nonempty.next(), nonempty.next().is_some()) else {
            let one = bufs
                .iter()
                .find(|b| !b.is_empty())
                .map_or(&[][..], |b| &b[..]);
            return port.poll_write(cx, one);
        };
        let mut gather = std::mem::take(&mut port.gather);
        gather.clear();
        gather.extend_from_slice(&first[..first.len().min(WRITE_GATHER)]);
        for b in bufs.iter().skip_while(|b| b.is_empty()).skip(1) {
            let room = WRITE_GATHER - gather.len();
            if room == 0 {
                break;
            }
            gather.extend_from_slice(&b[..b.len().min(room)]);
        }
        let res = port.poll_write(cx, &gather);
        port.gather = gather;
        res
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut port = lock(&self.port);
        match port.stream.as_mut() {
            Some(stream) => Pin::new(stream).poll_flush(cx),
            None => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut port = lock(&self.port);
        match port.stream.as_mut() {
            Some(stream) => Pin::new(stream).poll_shutdown(cx),
            None => Poll::Ready(Ok(())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(s: &str) -> Result<SerialSettings, Error> {
        SerialSettings::from_address(&s.parse().unwrap())
    }

    #[test]
    fn defaults_and_every_parameter() {
        let s = settings("serial:///dev/ttyUSB0").unwrap();
        assert_eq!(
            s,
            SerialSettings {
                path: "/dev/ttyUSB0".into(),
                baud: 115_200,
                data_bits: 8,
                parity: Parity::None,
                stop_bits: 1,
                flow: Flow::None,
                reopen: Duration::ZERO,
            }
        );
        let s = settings(
            "serial:///dev/ttyS1?baud=9600&data_bits=7&parity=odd&stop_bits=2&flow=hardware",
        )
        .unwrap();
        assert_eq!(
            (s.baud, s.data_bits, s.parity, s.stop_bits, s.flow),
            (9600, 7, Parity::Odd, 2, Flow::Hardware)
        );
    }

    #[test]
    fn errors_name_the_bad_key() {
        for (uri, key) in [
            ("serial:///dev/x?baud=fast", "baud"),
            ("serial:///dev/x?baud=0", "baud"),
            ("serial:///dev/x?baud=5000000", "baud"),
            ("serial:///dev/x?data_bits=9", "data_bits"),
            ("serial:///dev/x?parity=mark", "parity"),
            ("serial:///dev/x?stop_bits=1.5", "stop_bits"),
            ("serial:///dev/x?flow=rts", "flow"),
            ("serial:///dev/x?reopen_ms=-1", "reopen_ms"),
            ("serial:///dev/x?reopen_ms=99999999", "reopen_ms"),
            ("serial:///dev/x?bauds=9600", "bauds"),
        ] {
            let err = settings(uri).unwrap_err();
            assert!(
                matches!(err, Error::InvalidAddress { .. }),
                "{uri}: {err:?}"
            );
            assert!(err.to_string().contains(key), "{uri}: {err}");
        }
        let err = settings("serial://host/dev/x").unwrap_err();
        assert!(err.to_string().contains("three slashes"), "{err}");
        let err = settings("tcp://host:1").unwrap_err();
        assert!(err.to_string().contains("serial"), "{err}");
    }

    #[tokio::test]
    async fn missing_device_is_a_bad_path() {
        let at: Address = "serial:///dev/oscloud-no-such-tty".parse().unwrap();
        let err = SerialTransport.connect(&at).await.unwrap_err();
        assert!(matches!(err, Error::BadPath { .. }), "{err:?}");
        let err = SerialTransport.listen(&at).await.err().unwrap();
        assert!(matches!(err, Error::BadPath { .. }), "{err:?}");
    }
}
