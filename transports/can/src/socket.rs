//! SocketCAN raw sockets as datagram links (Linux only).

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use oscloud_core::Error;
use oscloud_core::transport::{DatagramRx, DatagramTx, Link, LinkInfo, LinkIo, LinkKind};
use socketcan::id::FdFlags;
use socketcan::{
    CanAnyFrame, CanFilter, CanFrame, EmbeddedFrame, ExtendedId, Id, SocketOptions, StandardId,
};
use tokio::sync::OwnedSemaphorePermit;
use tracing::{debug, info, trace, warn};

use crate::settings::{CanId, CanSettings};
use crate::{CanError, ENETDOWN, FD_MTU};

/// How long a write waits for room in a full transmit queue before the
/// frame is dropped (the session retransmits it).
const FULL_QUEUE_WAIT: Duration = Duration::from_millis(200);

/// The receive buffer asked for: a window of segmented frames (8 packets of
/// up to 764 bytes in 8-byte frames is about 1 000 CAN frames, each costing
/// the kernel about 1 KiB of buffer) arrives in one burst on a virtual bus.
const RECV_BUFFER: i32 = 4 * 1024 * 1024;
const SOL_SOCKET: i32 = 1;
const SO_RCVBUF: i32 = 8;
const SO_RCVBUFFORCE: i32 = 33;

/// A larger receive buffer: beyond `rmem_max` where allowed (root,
/// CAP_NET_ADMIN), else up to it.
fn grow_receive_buffer(s: &impl SocketOptions) {
    if s.set_socket_option_int(SOL_SOCKET, SO_RCVBUFFORCE, RECV_BUFFER)
        .is_err()
    {
        let _ = s.set_socket_option_int(SOL_SOCKET, SO_RCVBUF, RECV_BUFFER);
    }
}

/// A raw CAN socket, classic or FD.
enum Socket {
    Classic(socketcan::tokio::CanSocket),
    Fd(socketcan::tokio::CanFdSocket),
}

fn embedded_id(id: CanId) -> Option<Id> {
    if id.is_extended() {
        ExtendedId::new(id.raw()).map(Id::Extended)
    } else {
        u16::try_from(id.raw())
            .ok()
            .and_then(StandardId::new)
            .map(Id::Standard)
    }
}

/// The kernel filter that passes data frames with exactly `id`.
fn filter(id: CanId) -> CanFilter {
    const EFF: u32 = 0x8000_0000;
    const RTR: u32 = 0x4000_0000;
    if id.is_extended() {
        CanFilter::new(id.raw() | EFF, 0x1FFF_FFFF | EFF | RTR)
    } else {
        CanFilter::new(id.raw(), 0x7FF | EFF | RTR)
    }
}

/// A frame's payload as a datagram, if it is one of ours: a data frame
/// with the receive identifier (the kernel filter already checks that,
/// this again for safety), and in FD mode an FD frame whose length byte
/// fits.
fn datagram(frame: &CanAnyFrame, rx: Id) -> Option<Bytes> {
    match frame {
        CanAnyFrame::Normal(f) if f.id() == rx => Some(Bytes::copy_from_slice(f.data())),
        CanAnyFrame::Fd(f) if f.id() == rx => {
            let (&len, rest) = f.data().split_first()?;
            rest.get(..usize::from(len)).map(Bytes::copy_from_slice)
        }
        _ => None,
    }
}

/// How long a reader waits before reading again after a second "network
/// is down" error in a row (the first one only reports the event).
const DOWN_RETRY: Duration = Duration::from_millis(50);

/// Whether an I/O error means the interface is down (`ip link set IFACE
/// down`, e.g. to change a controller's bit rate): the socket stays bound
/// and works again when the interface is up.
fn interface_down(e: &io::Error) -> bool {
    e.raw_os_error() == Some(ENETDOWN)
}

/// Whether an I/O error means the transmit queue is full for now.
fn queue_full(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock || e.raw_os_error() == Some(105 /* ENOBUFS */)
}

impl Socket {
    fn open(settings: &CanSettings) -> Result<Self, CanError> {
        let interface = &settings.interface;
        let socket = if settings.fd {
            let s = socketcan::tokio::CanFdSocket::open(interface)
                .map_err(|e| CanError::open(interface, &e))?;
            s.set_filters(&[filter(settings.rx)])
                .map_err(|e| CanError::open(interface, &e))?;
            grow_receive_buffer(&s);
            Socket::Fd(s)
        } else {
            let s = socketcan::tokio::CanSocket::open(interface)
                .map_err(|e| CanError::open(interface, &e))?;
            s.set_filters(&[filter(settings.rx)])
                .map_err(|e| CanError::open(interface, &e))?;
            grow_receive_buffer(&s);
            Socket::Classic(s)
        };
        Ok(socket)
    }

    async fn read(&self) -> io::Result<CanAnyFrame> {
        match self {
            Socket::Classic(s) => s.read_frame().await.map(CanAnyFrame::from),
            Socket::Fd(s) => s.read_frame().await,
        }
    }

    async fn write(&self, frame: &CanAnyFrame) -> io::Result<()> {
        match (self, frame) {
            (Socket::Classic(s), CanAnyFrame::Normal(f)) => s.write_frame(CanFrame::Data(*f)).await,
            (Socket::Fd(s), CanAnyFrame::Fd(f)) => s.write_frame(f).await,
            _ => Err(io::Error::other("frame kind does not match the socket")),
        }
    }
}

/// What both halves of one link share; dropping the last half frees the
/// listener for its next peer.
struct Shared {
    socket: Socket,
    settings: CanSettings,
    tx_id: Id,
    rx_id: Id,
    /// The interface was reported down and not seen working since.
    down: AtomicBool,
    _slot: Option<OwnedSemaphorePermit>,
}

impl Shared {
    /// Note that the interface is down (logged once per outage).
    fn went_down(&self, e: &io::Error) {
        if !self.down.swap(true, Ordering::Relaxed) {
            warn!(
                interface = %self.settings.interface,
                "CAN interface down ({e}): the link waits for it to come back up; \
                 frames lost meanwhile are retransmitted by the session"
            );
        }
    }

    /// Note that the interface works (again): a frame went out, which the
    /// kernel refuses on a down interface. (A frame read proves nothing:
    /// it may have been queued before the interface went down.)
    fn is_up(&self) {
        if self.down.load(Ordering::Relaxed) && self.down.swap(false, Ordering::Relaxed) {
            info!(interface = %self.settings.interface, "CAN interface up again: the link goes on");
        }
    }

    /// The next datagram for us. An interface that goes down does not end
    /// the link: the socket stays bound to it and receives again when it is
    /// up (the session's idle timeout ends a link whose interface stays
    /// down). Other errors (the interface was deleted: ENODEV) do.
    async fn read_datagram(&self) -> Result<Bytes, CanError> {
        let mut downs_in_a_row = 0u32;
        loop {
            match self.socket.read().await {
                Ok(frame) => {
                    downs_in_a_row = 0;
                    match datagram(&frame, self.rx_id) {
                        Some(d) => return Ok(d),
                        None => trace!("CAN frame ignored"),
                    }
                }
                Err(e) if interface_down(&e) => {
                    self.went_down(&e);
                    downs_in_a_row += 1;
                    if downs_in_a_row > 1 {
                        tokio::time::sleep(DOWN_RETRY).await;
                    }
                }
                Err(e) => return Err(CanError::io(&self.settings.interface, &e)),
            }
        }
    }
}

/// Open a socket on the settings' interface, receiving `settings.rx`.
/// `slot` (for a listener's link) is held until the link is gone.
pub(crate) fn open(
    settings: &CanSettings,
    slot: Option<OwnedSemaphorePermit>,
) -> Result<OpenSocket, CanError> {
    let bad_id = |id: CanId| CanError::BadAddress {
        address: settings.describe(settings.tx, settings.rx),
        reason: format!("identifier {id} is not valid"),
    };
    let tx_id = embedded_id(settings.tx).ok_or_else(|| bad_id(settings.tx))?;
    let rx_id = embedded_id(settings.rx).ok_or_else(|| bad_id(settings.rx))?;
    let socket = Socket::open(settings)?;
    Ok(OpenSocket(Arc::new(Shared {
        socket,
        settings: settings.clone(),
        tx_id,
        rx_id,
        down: AtomicBool::new(false),
        _slot: slot,
    })))
}

/// An open socket, not yet a link.
pub(crate) struct OpenSocket(Arc<Shared>);

impl OpenSocket {
    /// Wait for the first datagram from a peer (a listener's accept).
    pub(crate) async fn first_datagram(&self) -> Result<Bytes, CanError> {
        self.0.read_datagram().await
    }

    /// The link, handing out `first` (if any) before what the socket reads.
    pub(crate) fn into_link(self, first: Option<Bytes>) -> Link {
        let s = &self.0.settings;
        let local = s.describe(s.tx, s.rx);
        let remote = s.describe(s.rx, s.tx);
        debug!(%local, "CAN link up");
        Link {
            info: LinkInfo {
                kind: LinkKind::Datagram { mtu: s.mtu() },
                local,
                remote,
            },
            io: LinkIo::Datagram {
                rx: Box::new(CanRx {
                    shared: self.0.clone(),
                    first,
                }),
                tx: Box::new(CanTx { shared: self.0 }),
            },
        }
    }
}

struct CanRx {
    shared: Arc<Shared>,
    first: Option<Bytes>,
}

#[async_trait]
impl DatagramRx for CanRx {
    async fn recv(&mut self) -> Result<Bytes, Error> {
        if let Some(d) = self.first.take() {
            return Ok(d);
        }
        Ok(self.shared.read_datagram().await?)
    }
}

struct CanTx {
    shared: Arc<Shared>,
}

impl CanTx {
    fn frame(&self, datagram: &[u8]) -> Option<CanAnyFrame> {
        let id = self.shared.tx_id;
        if self.shared.settings.fd {
            if datagram.len() > FD_MTU {
                return None;
            }
            let mut data = [0u8; FD_MTU + 1];
            data[0] = datagram.len() as u8;
            data[1..=datagram.len()].copy_from_slice(datagram);
            // The frame is padded up to the next valid FD length.
            let len = socketcan::CanFdFrame::next_valid_ext_dlen(datagram.len() + 1);
            socketcan::CanFdFrame::with_flags(id, &data[..len], FdFlags::BRS).map(CanAnyFrame::Fd)
        } else {
            socketcan::CanDataFrame::new(id, datagram).map(CanAnyFrame::Normal)
        }
    }
}

#[async_trait]
impl DatagramTx for CanTx {
    async fn send(&self, datagram: Bytes) -> Result<(), Error> {
        let Some(frame) = self.frame(&datagram) else {
            return Err(Error::LinkFailed {
                address: self.shared.settings.interface.clone(),
                reason: format!(
                    "a datagram of {} bytes does not fit a CAN{} frame",
                    datagram.len(),
                    if self.shared.settings.fd { " FD" } else { "" }
                ),
            });
        };
        let deadline = tokio::time::Instant::now() + FULL_QUEUE_WAIT;
        loop {
            match self.shared.socket.write(&frame).await {
                Ok(()) => {
                    self.shared.is_up();
                    return Ok(());
                }
                // The interface is down: the frame is lost, as on a bus
                // without power; the session retransmits it once the
                // interface is up again.
                Err(e) if interface_down(&e) => {
                    self.shared.went_down(&e);
                    return Ok(());
                }
                // A full queue (ENOBUFS on a busy bus): wait a little; after
                // a while drop the frame, as a busy bus would.
                Err(e) if queue_full(&e) => {
                    if tokio::time::Instant::now() >= deadline {
                        trace!("CAN transmit queue full: frame dropped");
                        return Ok(());
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err(e) => {
                    return Err(CanError::io(&self.shared.settings.interface, &e).into());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ENETDOWN is an outage the link waits out; ENODEV (the interface
    /// was deleted) and other errors end it.
    #[test]
    fn only_a_down_interface_is_waited_out() {
        let e = io::Error::from_raw_os_error;
        assert!(interface_down(&e(ENETDOWN)));
        assert!(!interface_down(&e(19 /* ENODEV */)));
        assert!(!interface_down(&e(5 /* EIO */)));
        assert!(!queue_full(&e(ENETDOWN)));
    }
}
