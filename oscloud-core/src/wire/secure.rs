//! The secure layer of a session: a Noise handshake after the Hellos, then
//! authenticated encryption of every frame (`docs/PROTOCOL.md` §11).
//!
//! Sans-IO like the rest of `wire`: the [`Session`](super::Session) hands
//! handshake messages in and out, and seals/opens whole packets between the
//! packet codec and the framing, so every framing (length prefix, COBS,
//! segments) carries ciphertext unchanged.
//!
//! - Handshake: `Noise_XX_25519_ChaChaPoly_BLAKE2s` (or
//!   `Noise_XXpsk3_25519_ChaChaPoly_BLAKE2s` with a pre-shared key). The
//!   initiator is the side whose Hello has the lower session id; both
//!   Hellos, as sent, are the prologue, so they are authenticated too.
//! - Transport: each encrypted frame carries its own key epoch and nonce
//!   (`0xC1, epoch: u8, nonce: u32 BE`, then ciphertext and a 16-byte tag),
//!   so frames lost or reordered on lossy links still open; a replay window
//!   (strictly in order on reliable streams) rejects replays; keys roll
//!   forward (Noise `REKEY`) after a volume or time.

use std::fmt;
use std::time::{Duration, Instant};

use aegis::aegis256::Aegis256;
use bytes::{Bytes, BytesMut};
use ring::aead::{AES_256_GCM, Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};

use crate::NodeId;
use crate::identity::{AllowList, NodeKey, PublicKey};

/// Hello feature bit: this side runs the Noise handshake and encrypts
/// (`docs/PROTOCOL.md` §11).
pub const FEATURE_NOISE: u64 = 1;
/// Hello feature bit: the handshake is the pre-shared-key variant
/// (`XXpsk3`); only meaningful with [`FEATURE_NOISE`].
pub const FEATURE_PSK: u64 = 2;
/// Hello feature bit: this side can use AES-256-GCM (it has AES in
/// hardware); when both sides set it, the suite is
/// `Noise_XX(psk3)_25519_AESGCM_BLAKE2s`, else ChaChaPoly.
pub const FEATURE_AESGCM: u64 = 4;
/// Hello feature bit: this side can seal frames with AEGIS-256 (RFC 10032;
/// it has AES in hardware). When both sides set it, frames are sealed with
/// AEGIS-256 and the handshake is `Noise_XX(psk3)_25519_AESGCM_BLAKE2s`;
/// it takes precedence over [`FEATURE_AESGCM`].
pub const FEATURE_AEGIS: u64 = 32;
/// First byte of every encrypted frame (never the first byte of a
/// MessagePack packet).
pub const SECURE_MARK: u8 = 0xC1;
/// Bytes an encrypted frame adds to a packet: 6 header + 16 tag.
pub const SECURE_OVERHEAD: usize = HEADER + TAG_LEN;

const HEADER: usize = 6;
const TAG_LEN: usize = 16;
/// Nonces remembered behind the highest one seen (lossy links).
const REPLAY_WINDOW: u64 = 1024;
const WORDS: usize = (REPLAY_WINDOW / 64) as usize;
/// Sealed frames from this long up to [`RECYCLE_MAX`] have their buffers
/// reused.
const RECYCLE_MIN: usize = 16 * 1024;
/// Larger frames are rare: their buffers are not kept (so an idle link
/// holds at most `RECYCLE_KEEP × RECYCLE_MAX` = 1 MiB of them).
const RECYCLE_MAX: usize = 256 * 1024;
/// Sent frames whose buffers are watched for reuse.
const RECYCLE_KEEP: usize = 4;

/// The cipher of a secure session, agreed through the Hello feature bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suite {
    /// ChaCha20-Poly1305 (the default; fast without AES hardware).
    ChaChaPoly,
    /// AES-256-GCM (when both sides have AES in hardware).
    AesGcm,
    /// AEGIS-256 (RFC 10032) for the frames, after an AES-GCM handshake
    /// (when both sides have AES in hardware and offer it): about twice
    /// as fast as AES-256-GCM per byte on AES-NI without VAES.
    Aegis256,
}

impl Suite {
    fn pattern(self, psk: bool) -> &'static str {
        match (self, psk) {
            (Suite::ChaChaPoly, false) => "Noise_XX_25519_ChaChaPoly_BLAKE2s",
            (Suite::ChaChaPoly, true) => "Noise_XXpsk3_25519_ChaChaPoly_BLAKE2s",
            (Suite::AesGcm | Suite::Aegis256, false) => "Noise_XX_25519_AESGCM_BLAKE2s",
            (Suite::AesGcm | Suite::Aegis256, true) => "Noise_XXpsk3_25519_AESGCM_BLAKE2s",
        }
    }
}

/// A frame cipher and its key.
// One per key direction, never moved on the hot path: the size gap between
// ring's expanded key and AEGIS's raw key does not matter.
#[allow(clippy::large_enum_variant)]
enum Cipher {
    /// ChaCha20-Poly1305 or AES-256-GCM, through `ring`.
    Ring(Suite, LessSafeKey),
    /// AEGIS-256 with a 128-bit tag.
    Aegis([u8; 32]),
}

impl Cipher {
    fn new(suite: Suite, raw: &[u8; 32]) -> Self {
        let alg = match suite {
            Suite::ChaChaPoly => &CHACHA20_POLY1305,
            Suite::AesGcm => &AES_256_GCM,
            Suite::Aegis256 => return Cipher::Aegis(*raw),
        };
        // A 32-byte key is valid for both algorithms.
        match UnboundKey::new(alg, raw) {
            Ok(k) => Cipher::Ring(suite, LessSafeKey::new(k)),
            Err(_) => unreachable_key(),
        }
    }

    /// The Noise nonce: 4 zero bytes, then `n` little-endian (ChaChaPoly)
    /// or big-endian (AESGCM).
    fn ring_nonce(suite: Suite, n: u64) -> Nonce {
        let mut nonce = [0u8; 12];
        match suite {
            Suite::ChaChaPoly => nonce[4..].copy_from_slice(&n.to_le_bytes()),
            _ => nonce[4..].copy_from_slice(&n.to_be_bytes()),
        }
        Nonce::assume_unique_for_key(nonce)
    }

    /// The AEGIS-256 nonce (32 bytes): 24 zero bytes, then `n` big-endian.
    fn aegis_nonce(n: u64) -> [u8; 32] {
        let mut nonce = [0u8; 32];
        nonce[24..].copy_from_slice(&n.to_be_bytes());
        nonce
    }

    /// Encrypt `body` in place under nonce `n`, authenticating `aad` too;
    /// the tag.
    fn seal(&self, n: u64, aad: &[u8], body: &mut [u8]) -> Option<[u8; TAG_LEN]> {
        match self {
            Cipher::Ring(suite, key) => {
                let tag = key
                    .seal_in_place_separate_tag(Self::ring_nonce(*suite, n), Aad::from(aad), body)
                    .ok()?;
                let mut t = [0u8; TAG_LEN];
                t.copy_from_slice(tag.as_ref());
                Some(t)
            }
            Cipher::Aegis(key) => Some(
                Aegis256::<TAG_LEN>::new(key, &Self::aegis_nonce(n)).encrypt_in_place(body, aad),
            ),
        }
    }

    /// Encrypt `head ‖ tail` into `out` (exactly as long as both) under
    /// nonce `n`, authenticating `aad` too; the tag. AEGIS reads the
    /// plaintext where it is and writes the ciphertext straight into
    /// `out`; ring's ciphers copy it there first and encrypt in place.
    fn seal_into(
        &self,
        n: u64,
        aad: &[u8],
        head: &[u8],
        tail: &[u8],
        out: &mut [u8],
    ) -> Option<[u8; TAG_LEN]> {
        if out.len() != head.len() + tail.len() {
            return None;
        }
        let Cipher::Aegis(key) = self else {
            let (h, t) = out.split_at_mut(head.len());
            h.copy_from_slice(head);
            t.copy_from_slice(tail);
            return self.seal(n, aad, out);
        };
        let mut enc = Aegis256::<TAG_LEN>::new(key, &Self::aegis_nonce(n)).encryptor(aad);
        let (h, t) = out.split_at_mut(head.len());
        enc.update(head, h);
        enc.update(tail, t);
        Some(enc.finalize())
    }

    /// Open `sealed` (ciphertext ‖ tag) in place under nonce `n`, leaving
    /// the plaintext; true if authentic.
    fn open(&self, n: u64, aad: &[u8], sealed: &mut BytesMut) -> bool {
        match self {
            Cipher::Ring(suite, key) => {
                match key.open_in_place(Self::ring_nonce(*suite, n), Aad::from(aad), sealed) {
                    Ok(p) => {
                        let len = p.len();
                        sealed.truncate(len);
                        true
                    }
                    Err(_) => false,
                }
            }
            Cipher::Aegis(key) => {
                let Some(len) = sealed.len().checked_sub(TAG_LEN) else {
                    return false;
                };
                let (body, tag) = sealed.split_at_mut(len);
                let mut t = [0u8; TAG_LEN];
                t.copy_from_slice(tag);
                let ok = Aegis256::<TAG_LEN>::new(key, &Self::aegis_nonce(n))
                    .decrypt_in_place(body, &t, aad)
                    .is_ok();
                if ok {
                    sealed.truncate(len);
                }
                ok
            }
        }
    }
}

#[allow(clippy::panic)]
fn unreachable_key() -> ! {
    // ring accepts every 32-byte key for both of its algorithms used here.
    panic!("ring refused a 32-byte AEAD key")
}

/// Whether this machine has AES in hardware (so AES-256-GCM is fast).
pub fn has_aes_hardware() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("aes")
            && std::arch::is_x86_feature_detected!("pclmulqdq")
    }
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("aes")
            && std::arch::is_aarch64_feature_detected!("pmull")
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        false
    }
}
/// Prefix of the handshake prologue.
const PROLOGUE: &[u8] = b"oscloud wire 1 noise";

/// How a session secures its link: this node's key, who may link, and
/// when keys roll forward.
#[derive(Clone)]
pub struct SecureConfig {
    /// This node's static key (the node id must be derived from it).
    pub key: NodeKey,
    /// A pre-shared key both sides must have (`XXpsk3`), if any.
    pub psk: Option<[u8; 32]>,
    /// Peers admitted after the handshake.
    pub allow: AllowList,
    /// Roll the sending key forward after this many bytes sealed.
    pub rekey_after_bytes: u64,
    /// Roll the sending key forward after this long.
    pub rekey_after: Duration,
    /// Offer AES-256-GCM when this machine has AES in hardware (used when
    /// the peer offers it too); otherwise ChaCha20-Poly1305.
    pub offer_aes_gcm: bool,
    /// Offer AEGIS-256 for the frames when this machine has AES in
    /// hardware (used when the peer offers it too, before AES-256-GCM).
    pub offer_aegis: bool,
}

impl fmt::Debug for SecureConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecureConfig")
            .field("key", &self.key)
            .field("psk", &self.psk.map(|_| "<redacted>"))
            .field("allow", &self.allow)
            .field("rekey_after_bytes", &self.rekey_after_bytes)
            .field("rekey_after", &self.rekey_after)
            .field("offer_aes_gcm", &self.offer_aes_gcm)
            .field("offer_aegis", &self.offer_aegis)
            .finish()
    }
}

impl SecureConfig {
    /// Secure links with `key`, admitting the peers `allow` admits; keys
    /// roll forward every 1 GiB or 10 minutes.
    pub fn new(key: NodeKey, allow: AllowList) -> Self {
        Self {
            key,
            psk: None,
            allow,
            rekey_after_bytes: 1 << 30,
            rekey_after: Duration::from_secs(600),
            offer_aes_gcm: true,
            offer_aegis: true,
        }
    }

    /// Also require this pre-shared key.
    pub fn with_psk(mut self, psk: [u8; 32]) -> Self {
        self.psk = Some(psk);
        self
    }

    /// The feature bits this configuration sets in the Hello.
    pub fn features(&self) -> u64 {
        let psk = if self.psk.is_some() { FEATURE_PSK } else { 0 };
        let hw = has_aes_hardware();
        let aes = if self.offer_aes_gcm && hw {
            FEATURE_AESGCM
        } else {
            0
        };
        let aegis = if self.offer_aegis && hw {
            FEATURE_AEGIS
        } else {
            0
        };
        FEATURE_NOISE | psk | aes | aegis
    }
}

/// What a handshake message led to.
#[derive(Debug)]
pub(crate) enum HsOutcome {
    /// Nothing to do (a stale message).
    Nothing,
    /// Send this handshake message.
    Send(Bytes),
    /// The same message as before arrived again (its answer was lost).
    Duplicate,
    /// The handshake is done; send `send` (the initiator's last message)
    /// if any.
    Established {
        peer: PublicKey,
        send: Option<Bytes>,
    },
    /// The handshake failed or the peer is not admitted.
    Refused(String),
}

/// Why an encrypted frame was not opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpenError {
    /// Too short or not an encrypted frame.
    Malformed,
    /// Keys are not there yet (the handshake is not finished here).
    NoKeys,
    /// Nonce already seen, too old, or out of order on a reliable stream.
    Replay,
    /// The tag does not verify: forged, damaged or for another session.
    Auth,
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OpenError::Malformed => "malformed encrypted frame",
            OpenError::NoKeys => "encrypted frame before the handshake finished",
            OpenError::Replay => "replayed or out-of-order encrypted frame",
            OpenError::Auth => "encrypted frame failed authentication (tampered or forged)",
        })
    }
}

/// Noise `REKEY(k)`: the first 32 bytes of `ENCRYPT(k, 2^64-1, "", zeros)`
/// (for AEGIS-256 the same, with its nonce encoding).
fn rekey(suite: Suite, key: &[u8; 32]) -> [u8; 32] {
    let mut next = [0u8; 32];
    // Sealing 32 bytes cannot fail.
    let _ = Cipher::new(suite, key).seal(u64::MAX, &[], &mut next);
    next
}

struct TxKey {
    suite: Suite,
    cipher: Cipher,
    key: [u8; 32],
    epoch: u64,
    nonce: u64,
    bytes: u64,
    since: Instant,
}

impl TxKey {
    fn new(suite: Suite, key: [u8; 32], now: Instant) -> Self {
        Self {
            suite,
            cipher: Cipher::new(suite, &key),
            key,
            epoch: 0,
            nonce: 0,
            bytes: 0,
            since: now,
        }
    }

    fn roll(&mut self, now: Instant) {
        self.key = rekey(self.suite, &self.key);
        self.cipher = Cipher::new(self.suite, &self.key);
        self.epoch += 1;
        self.nonce = 0;
        self.bytes = 0;
        self.since = now;
    }
}

/// Nonces seen under one key: the highest, and a bitmap of the
/// `REPLAY_WINDOW` before it.
#[derive(Clone)]
struct ReplayWindow {
    /// One more than the highest nonce accepted (0: none yet).
    top: u64,
    bits: [u64; WORDS],
}

impl ReplayWindow {
    fn new() -> Self {
        Self {
            top: 0,
            bits: [0; WORDS],
        }
    }

    fn bit(n: u64) -> (usize, u64) {
        let i = n % REPLAY_WINDOW;
        ((i / 64) as usize, 1u64 << (i % 64))
    }

    fn fresh(&self, n: u64, strict: bool) -> bool {
        if strict {
            return n == self.top;
        }
        if n >= self.top {
            return true;
        }
        if self.top - n > REPLAY_WINDOW {
            return false;
        }
        let (w, m) = Self::bit(n);
        self.bits[w] & m == 0
    }

    fn mark(&mut self, n: u64) {
        if n >= self.top {
            if n + 1 - self.top >= REPLAY_WINDOW {
                self.bits = [0; WORDS];
            } else {
                for k in self.top..n {
                    let (w, m) = Self::bit(k);
                    self.bits[w] &= !m;
                }
            }
            self.top = n + 1;
        }
        let (w, m) = Self::bit(n);
        self.bits[w] |= m;
    }
}

struct RxKey {
    suite: Suite,
    cipher: Cipher,
    key: [u8; 32],
    epoch: u64,
    window: ReplayWindow,
}

impl RxKey {
    fn new(suite: Suite, key: [u8; 32], epoch: u64) -> Self {
        Self {
            suite,
            cipher: Cipher::new(suite, &key),
            key,
            epoch,
            window: ReplayWindow::new(),
        }
    }

    fn next(&self) -> Self {
        Self::new(self.suite, rekey(self.suite, &self.key), self.epoch + 1)
    }

    /// Open `sealed` (ciphertext ‖ tag) in place; true if authentic.
    fn open(&self, header: &[u8], nonce: u64, sealed: &mut BytesMut) -> bool {
        self.cipher.open(nonce, header, sealed)
    }
}

/// The secure state of one session.
pub(crate) struct Secure {
    cfg: SecureConfig,
    /// Reliable stream: frames must arrive strictly in order.
    strict: bool,
    hs: Option<Box<snow::HandshakeState>>,
    initiator: bool,
    /// Our last handshake message (re-sent on loss).
    last_sent: Option<Bytes>,
    /// The peer's last handshake message (to spot repeats).
    last_recv: Option<Bytes>,
    peer_key: Option<PublicKey>,
    tx: Option<TxKey>,
    rx: Option<RxKey>,
    prev_rx: Option<RxKey>,
    /// The peer has shown it holds the keys (an encrypted frame opened).
    confirmed: bool,
    suite: Suite,
    /// Large frames sent, whose buffers are reused once the link let go.
    recycled: Vec<Bytes>,
}

impl fmt::Debug for Secure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secure")
            .field("initiator", &self.initiator)
            .field("peer_key", &self.peer_key)
            .field("keys", &self.tx.is_some())
            .field("confirmed", &self.confirmed)
            .field("tx_epoch", &self.tx.as_ref().map(|t| t.epoch))
            .finish()
    }
}

impl Secure {
    pub(crate) fn new(cfg: SecureConfig, strict: bool) -> Self {
        Self {
            cfg,
            strict,
            hs: None,
            initiator: false,
            last_sent: None,
            last_recv: None,
            peer_key: None,
            tx: None,
            rx: None,
            prev_rx: None,
            confirmed: false,
            suite: Suite::ChaChaPoly,
            recycled: Vec::new(),
        }
    }

    pub(crate) fn features(&self) -> u64 {
        self.cfg.features()
    }

    /// Whether the handshake has started.
    pub(crate) fn started(&self) -> bool {
        self.hs.is_some() || self.tx.is_some()
    }

    /// Whether keys are in place (this side finished the handshake).
    pub(crate) fn has_keys(&self) -> bool {
        self.tx.is_some()
    }

    /// Whether the peer proved it has the keys too.
    pub(crate) fn confirmed(&self) -> bool {
        self.confirmed
    }

    pub(crate) fn is_initiator(&self) -> bool {
        self.initiator
    }

    /// Whether a handshake message of ours may be lost and must be re-sent
    /// on the retransmission timer.
    pub(crate) fn awaiting(&self) -> bool {
        self.last_sent.is_some() && !self.confirmed
    }

    /// Our last handshake message, to send again.
    pub(crate) fn last_sent(&self) -> Option<Bytes> {
        self.last_sent.clone()
    }

    /// Start the handshake after both Hellos: `hellos` are the two Hellos
    /// as sent (initiator's first). Returns the first message to send (the
    /// initiator's), or an error text.
    pub(crate) fn start(
        &mut self,
        initiator: bool,
        suite: Suite,
        hellos: [&[u8]; 2],
    ) -> Result<Option<Bytes>, String> {
        self.suite = suite;
        let mut prologue = Vec::with_capacity(PROLOGUE.len() + hellos[0].len() + hellos[1].len());
        prologue.extend_from_slice(PROLOGUE);
        for h in hellos {
            prologue.extend_from_slice(&(h.len() as u32).to_be_bytes());
            prologue.extend_from_slice(h);
        }
        let pattern = suite.pattern(self.cfg.psk.is_some());
        let params: snow::params::NoiseParams =
            pattern.parse().map_err(|e| format!("noise params: {e}"))?;
        let mut builder = snow::Builder::new(params)
            .local_private_key(self.cfg.key.secret_bytes())
            .and_then(|b| b.prologue(&prologue))
            .map_err(|e| format!("noise setup: {e}"))?;
        if let Some(psk) = &self.cfg.psk {
            builder = builder.psk(3, psk).map_err(|e| format!("noise psk: {e}"))?;
        }
        let hs = if initiator {
            builder.build_initiator()
        } else {
            builder.build_responder()
        }
        .map_err(|e| format!("noise setup: {e}"))?;
        self.hs = Some(Box::new(hs));
        self.initiator = initiator;
        if initiator {
            let msg = self.write()?;
            self.last_sent = Some(msg.clone());
            return Ok(Some(msg));
        }
        Ok(None)
    }

    fn write(&mut self) -> Result<Bytes, String> {
        let hs = self.hs.as_mut().ok_or("no handshake")?;
        let mut buf = [0u8; 256];
        let n = hs
            .write_message(&[], &mut buf)
            .map_err(|e| format!("noise write: {e}"))?;
        Ok(Bytes::copy_from_slice(&buf[..n]))
    }

    /// A handshake message from the peer.
    /// `claimed` is the node id the peer's Hello gave.
    pub(crate) fn on_handshake(&mut self, msg: &Bytes, now: Instant, claimed: NodeId) -> HsOutcome {
        if self.last_recv.as_ref() == Some(msg) {
            return HsOutcome::Duplicate;
        }
        let Some(hs) = self.hs.as_mut() else {
            // Done already, or not started: a stale message.
            return HsOutcome::Nothing;
        };
        if hs.is_my_turn() {
            return HsOutcome::Nothing;
        }
        let mut payload = [0u8; 256];
        if let Err(e) = hs.read_message(msg, &mut payload) {
            return HsOutcome::Refused(format!(
                "Noise handshake failed ({e}): wrong pre-shared key, tampered message or not the same protocol"
            ));
        }
        self.last_recv = Some(msg.clone());
        let remote = hs
            .get_remote_static()
            .and_then(|k| <[u8; 32]>::try_from(k).ok())
            .map(PublicKey::from_bytes);
        if let Some(key) = remote
            && self.peer_key.is_none()
        {
            if key.node_id() != claimed {
                return HsOutcome::Refused(format!(
                    "the peer's node id {claimed} is not the one derived from its key {key}"
                ));
            }
            if !self.cfg.allow.allows(&key) {
                tracing::warn!(peer_key = %key, node = %key.node_id(), "peer refused: its key is not on the allow-list");
                return HsOutcome::Refused(format!(
                    "key {}… (node {}) is not on the allow-list",
                    key.short(),
                    key.node_id().short()
                ));
            }
            self.peer_key = Some(key);
        }
        let finished = self.hs.as_ref().is_some_and(|h| h.is_handshake_finished());
        if finished {
            return self.establish(None, now);
        }
        let out = match self.write() {
            Ok(m) => m,
            Err(e) => return HsOutcome::Refused(e),
        };
        self.last_sent = Some(out.clone());
        if self.hs.as_ref().is_some_and(|h| h.is_handshake_finished()) {
            return self.establish(Some(out), now);
        }
        HsOutcome::Send(out)
    }

    fn establish(&mut self, send: Option<Bytes>, now: Instant) -> HsOutcome {
        let (Some(mut hs), Some(peer)) = (self.hs.take(), self.peer_key) else {
            return HsOutcome::Refused("the peer sent no static key".into());
        };
        // The raw keys (snow's `risky-raw-split`): frames carry their own
        // nonce and key epoch, and a receiver keeps the previous epoch's
        // key for late frames, which snow's transport states cannot do.
        let (i2r, r2i) = hs.dangerously_get_raw_split();
        let (tx, rx) = if self.initiator {
            (i2r, r2i)
        } else {
            (r2i, i2r)
        };
        self.tx = Some(TxKey::new(self.suite, tx, now));
        self.rx = Some(RxKey::new(self.suite, rx, 0));
        if !self.initiator {
            // The responder read the last message: the initiator has keys.
            self.confirmed = true;
            self.last_sent = None;
        }
        HsOutcome::Established { peer, send }
    }

    /// Encrypt the packet `head ‖ tail` into one frame.
    pub(crate) fn seal(&mut self, now: Instant, head: &[u8], tail: &[u8]) -> Option<Bytes> {
        self.seal_after(now, 0, head, tail).map(BytesMut::freeze)
    }

    /// Encrypt the packet `head ‖ tail` into one frame that starts after
    /// `prefix` zero bytes (room for the framing's length prefix, so the
    /// frame goes to the link as one chunk). The buffer is a recycled one
    /// when an earlier frame's buffer came back (see
    /// [`recycle`](Self::recycle)), so large frames cost no allocation.
    pub(crate) fn seal_after(
        &mut self,
        now: Instant,
        prefix: usize,
        head: &[u8],
        tail: &[u8],
    ) -> Option<BytesMut> {
        self.tx.as_ref()?;
        let len = head.len() + tail.len();
        let need = prefix + HEADER + len + TAG_LEN;
        let mut buf = self.spare(need);
        let tx = self.tx.as_mut()?;
        if tx.nonce >= u64::from(u32::MAX)
            || tx.bytes >= self.cfg.rekey_after_bytes
            || now.saturating_duration_since(tx.since) >= self.cfg.rekey_after
        {
            tx.roll(now);
            tracing::debug!(epoch = tx.epoch, "wire session rolled its sending key");
        }
        // `buf` is `need` long already (zeros, or an earlier frame's bytes
        // to overwrite): prefix, header, ciphertext, tag.
        let body_at = prefix + HEADER;
        buf[..prefix].fill(0);
        buf[prefix] = SECURE_MARK;
        buf[prefix + 1] = tx.epoch as u8;
        buf[prefix + 2..body_at].copy_from_slice(&(tx.nonce as u32).to_be_bytes());
        let (front, rest) = buf.split_at_mut(body_at);
        let (body, tag_at) = rest.split_at_mut(len);
        let tag = tx
            .cipher
            .seal_into(tx.nonce, &front[prefix..], head, tail, body)?;
        tag_at.copy_from_slice(&tag);
        tx.nonce += 1;
        tx.bytes += len as u64;
        Some(buf)
    }

    /// A buffer of exactly `need` bytes: a recycled one whose frame the
    /// link has written and dropped (still holding that frame's bytes, to
    /// be overwritten), or new zeros.
    fn spare(&mut self, need: usize) -> BytesMut {
        if need >= RECYCLE_MIN
            && let Some(i) = self
                .recycled
                .iter()
                .position(|b| b.is_unique() && b.len() >= need)
            && let Ok(mut buf) = self.recycled.swap_remove(i).try_into_mut()
            && buf.len() >= need
        {
            buf.truncate(need);
            return buf;
        }
        BytesMut::zeroed(need)
    }

    /// Keep a handle on a large frame just sent, to reuse its buffer once
    /// the link has written it and let go of it.
    pub(crate) fn recycle(&mut self, frame: &Bytes) {
        if !(RECYCLE_MIN..=RECYCLE_MAX).contains(&frame.len()) {
            return;
        }
        if self.recycled.len() >= RECYCLE_KEEP {
            // The oldest is still held by the link (or lost): let it go.
            self.recycled.remove(0);
        }
        self.recycled.push(frame.clone());
    }

    /// Decrypt one frame (starting with [`SECURE_MARK`]) in place.
    pub(crate) fn open_owned(&mut self, mut frame: BytesMut) -> Result<Bytes, OpenError> {
        if frame.len() < HEADER + TAG_LEN || frame[0] != SECURE_MARK {
            return Err(OpenError::Malformed);
        }
        let strict = self.strict;
        let Some(cur) = self.rx.as_mut() else {
            return Err(OpenError::NoKeys);
        };
        let mut header = [0u8; HEADER];
        header.copy_from_slice(&frame[..HEADER]);
        let header = &header[..];
        let epoch = frame[1];
        let nonce = u64::from(u32::from_be_bytes([frame[2], frame[3], frame[4], frame[5]]));
        let mut out = frame.split_off(HEADER);
        if epoch == cur.epoch as u8 {
            if !cur.window.fresh(nonce, strict) {
                return Err(OpenError::Replay);
            }
            if !cur.open(header, nonce, &mut out) {
                return Err(OpenError::Auth);
            }
            cur.window.mark(nonce);
        } else if epoch == cur.epoch.wrapping_add(1) as u8 {
            // The peer rolled its key: derive the next one, keep the old
            // one for late frames (lossy links) until the next roll.
            let next = cur.next();
            if !next.window.fresh(nonce, strict) {
                return Err(OpenError::Replay);
            }
            if !next.open(header, nonce, &mut out) {
                return Err(OpenError::Auth);
            }
            let old = std::mem::replace(cur, next);
            cur.window.mark(nonce);
            self.prev_rx = (!strict).then_some(old);
        } else {
            let prev = self
                .prev_rx
                .as_mut()
                .filter(|p| epoch == p.epoch as u8)
                .ok_or(OpenError::Replay)?;
            if !prev.window.fresh(nonce, false) {
                return Err(OpenError::Replay);
            }
            if !prev.open(header, nonce, &mut out) {
                return Err(OpenError::Auth);
            }
            prev.window.mark(nonce);
        }
        self.confirmed = true;
        if self.initiator {
            self.last_sent = None;
        }
        Ok(out.freeze())
    }

    /// The cipher, once the handshake started.
    pub(crate) fn suite(&self) -> Option<Suite> {
        self.started().then_some(self.suite)
    }

    /// The sending key's epoch (for tests and stats).
    pub(crate) fn tx_epoch(&self) -> Option<u64> {
        self.tx.as_ref().map(|t| t.epoch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_window_accepts_reordering_and_rejects_repeats() {
        let mut w = ReplayWindow::new();
        for n in [0, 2, 1, 5, 3] {
            assert!(w.fresh(n, false), "{n}");
            w.mark(n);
        }
        for n in [0, 1, 2, 3, 5] {
            assert!(!w.fresh(n, false), "{n} again");
        }
        assert!(w.fresh(4, false));
        w.mark(5000);
        assert!(!w.fresh(4, false), "too old");
        assert!(w.fresh(4999, false));
        assert!(!w.fresh(5000 - REPLAY_WINDOW - 1, false));
    }

    #[test]
    fn large_frame_buffers_are_reused_once_the_link_let_go() {
        let now = Instant::now();
        let key = NodeKey::generate();
        let mut s = Secure::new(SecureConfig::new(key, AllowList::new()), true);
        s.tx = Some(TxKey::new(Suite::AesGcm, [1; 32], now));
        let payload = vec![9u8; 64 * 1024];
        let first = s.seal_after(now, 4, b"head", &payload).unwrap().freeze();
        assert_eq!(first.len(), 4 + SECURE_OVERHEAD + 4 + payload.len());
        assert_eq!(&first[..4], &[0; 4], "room for the prefix");
        s.recycle(&first);
        let at = first.as_ptr();
        // Still held by the link: a new buffer.
        let second = s.seal_after(now, 4, b"head", &payload).unwrap().freeze();
        assert_ne!(second.as_ptr(), at);
        assert_ne!(second[10..20], first[10..20], "another nonce");
        drop(first);
        // Let go: its buffer is reused.
        let third = s.seal_after(now, 4, b"head", &payload).unwrap();
        assert_eq!(third.as_ptr(), at);
        // Small frames are not tracked.
        let small = s.seal_after(now, 4, b"x", b"").unwrap().freeze();
        s.recycle(&small);
        assert!(s.recycled.is_empty());
    }

    #[test]
    fn strict_window_wants_the_next_nonce() {
        let mut w = ReplayWindow::new();
        assert!(!w.fresh(1, true));
        assert!(w.fresh(0, true));
        w.mark(0);
        assert!(!w.fresh(0, true));
        assert!(w.fresh(1, true));
    }

    #[test]
    fn rekey_is_deterministic_and_changes_the_key() {
        let k = [7u8; 32];
        for suite in [Suite::ChaChaPoly, Suite::AesGcm, Suite::Aegis256] {
            assert_eq!(rekey(suite, &k), rekey(suite, &k));
            assert_ne!(rekey(suite, &k), k);
        }
        assert_ne!(rekey(Suite::ChaChaPoly, &k), rekey(Suite::AesGcm, &k));
        assert_ne!(rekey(Suite::AesGcm, &k), rekey(Suite::Aegis256, &k));
    }

    #[test]
    fn chachapoly_nonce_matches_rfc_8439_with_noise_encoding() {
        // RFC 8439 §2.8.2: key 80..9f, nonce 07000000 4041424344454647,
        // aad 50515253c0c1c2c3c4c5c6c7; Noise's nonce has 4 zero bytes
        // first, so check with our own nonce encoding instead: seal and
        // open round trip, and a flipped bit fails.
        let key: [u8; 32] = std::array::from_fn(|i| 0x80 + i as u8);
        let k = RxKey::new(Suite::ChaChaPoly, key, 0);
        let mut buf = BytesMut::from(&b"hello"[..]);
        let tag = k.cipher.seal(5, b"h", &mut buf).unwrap();
        buf.extend_from_slice(&tag);
        let mut good = buf.clone();
        assert!(k.open(b"h", 5, &mut good));
        assert_eq!(&good[..], b"hello");
        let mut bad = buf.clone();
        bad[0] ^= 1;
        assert!(!k.open(b"h", 5, &mut bad));
        let mut wrong_nonce = buf;
        assert!(!k.open(b"h", 6, &mut wrong_nonce));
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn aegis_256_matches_rfc_10032_test_vector_3() {
        // RFC 10032 (AEGIS), AEGIS-256 test vector 3 (128-bit tag): pins
        // the algorithm the `aegis` crate implements, so an upgrade that
        // changed it would fail here rather than between two nodes.
        let key: [u8; 32] = hex("1001000000000000000000000000000000000000000000000000000000000000")
            .try_into()
            .unwrap();
        let nonce: [u8; 32] =
            hex("1000020000000000000000000000000000000000000000000000000000000000")
                .try_into()
                .unwrap();
        let ad = hex("0001020304050607");
        let mut msg = hex("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f");
        let tag = Aegis256::<TAG_LEN>::new(&key, &nonce).encrypt_in_place(&mut msg, &ad);
        assert_eq!(
            msg,
            hex("f373079ed84b2709faee373584585d60accd191db310ef5d8b11833df9dec711")
        );
        assert_eq!(tag.to_vec(), hex("8d86f91ee606e9ff26a01b64ccbdd91d"));
    }

    #[test]
    fn aegis_frames_round_trip_and_reject_tampering() {
        let k = RxKey::new(Suite::Aegis256, [3u8; 32], 0);
        let mut buf = BytesMut::from(&vec![5u8; 70_000][..]);
        let tag = k.cipher.seal(9, b"hdr", &mut buf).unwrap();
        assert_ne!(&buf[..16], &[5u8; 16], "encrypted");
        buf.extend_from_slice(&tag);
        let mut good = buf.clone();
        assert!(k.open(b"hdr", 9, &mut good));
        assert_eq!(&good[..], &vec![5u8; 70_000][..]);
        for (what, mut bad, aad, n) in [
            ("flipped bit", buf.clone(), &b"hdr"[..], 9),
            ("other header", buf.clone(), &b"hdR"[..], 9),
            ("other nonce", buf.clone(), &b"hdr"[..], 10),
            ("too short", BytesMut::from(&buf[..10]), &b"hdr"[..], 9),
        ] {
            if what == "flipped bit" {
                bad[100] ^= 1;
            }
            assert!(!k.open(aad, n, &mut bad), "{what}");
        }
    }
}
