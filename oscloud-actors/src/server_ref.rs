//! References to servers by name: raw bytes ([`ServerRef`]) and typed
//! ([`TypedRef`]).

use std::fmt;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use std::cell::RefCell;

use bytes::{BufMut, Bytes, BytesMut};
use futures::future::BoxFuture;
use oscloud_core::directory::FIND_TIMEOUT;
use oscloud_core::{Entry, Error as CoreError, Kernel, PipeEnd};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Error;
use crate::server::{LocalEndpoint, Payload};

/// A reference to a server **by name**, local or remote.
///
/// It goes through whatever [`Endpoint`](oscloud_core::Endpoint) the registry
/// holds for the name, so it never assumes where the server lives. Because
/// it holds the name rather than one incarnation, it survives restarts:
///
/// - a call or pipe resolves the name on every operation (for a group, this
///   is the registry's round-robin); a call to a single server uses the
///   entry it resolved last for as long as the registry has not changed
///   since (see [`Registry::generation`](oscloud_core::Registry::generation)),
///   which is what resolving it again would give;
/// - a cast to a single server uses the entry it resolved last and resolves
///   again (once) if that entry's server has stopped.
///
/// Cheap to clone; clones share the cached entry.
#[derive(Clone)]
pub struct ServerRef {
    kernel: Kernel,
    name: Arc<str>,
    cached: Arc<Mutex<Option<Cached>>>,
}

/// The single server a [`ServerRef`] resolved last, and the registry's
/// generation read before that lookup.
struct Cached {
    generation: u64,
    entry: Entry,
}

impl fmt::Debug for ServerRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerRef")
            .field("name", &self.name)
            .finish()
    }
}

impl ServerRef {
    /// A reference to `name`, without checking that it is registered now.
    pub fn new(kernel: &Kernel, name: &str) -> Self {
        Self {
            kernel: kernel.clone(),
            name: Arc::from(name),
            cached: Arc::new(Mutex::new(None)),
        }
    }

    /// A reference to `name`; fails with [`CoreError::NotFound`] if nothing
    /// is registered under it now.
    pub fn lookup(kernel: &Kernel, name: &str) -> Result<Self, Error> {
        let r = Self::new(kernel, name);
        r.resolve()?;
        Ok(r)
    }

    /// The server's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A typed view of this reference: `Req` is encoded, `Rep` decoded as
    /// MessagePack.
    pub fn typed<Req, Rep>(self) -> TypedRef<Req, Rep> {
        TypedRef {
            raw: self,
            _types: PhantomData,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Cached>> {
        self.cached.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Cache `entry`, looked up at registry generation `generation`, if
    /// it is a single server (a group is looked up every time, for its
    /// round-robin); forget the cached one otherwise.
    fn remember(&self, generation: u64, entry: &Entry) {
        *self.lock() = (!entry.is_group_member()).then(|| Cached {
            generation,
            entry: entry.clone(),
        });
    }

    /// Look the name up now (round-robin for a group), caching single
    /// servers.
    fn resolve(&self) -> Result<Entry, CoreError> {
        let registry = self.kernel.registry();
        let generation = registry.generation();
        let entry = registry.lookup(&self.name)?;
        self.remember(generation, &entry);
        Ok(entry)
    }

    /// What [`resolve`](Self::resolve) would give now: the cached entry
    /// while the registry has not changed since it was looked up (one
    /// atomic load), else a fresh lookup.
    fn current(&self) -> Result<Entry, CoreError> {
        let generation = self.kernel.registry().generation();
        if let Some(cached) = self.lock().as_ref()
            && cached.generation == generation
        {
            return Ok(cached.entry.clone());
        }
        self.resolve()
    }

    /// [`resolve`](Self::resolve), and for a name not in the registry,
    /// ask the node's directory, if it uses one, for at most `timeout`
    /// ([`Registry::find`](oscloud_core::Registry::find)).
    async fn find(&self, timeout: Duration) -> Result<Entry, CoreError> {
        let registry = self.kernel.registry();
        let generation = registry.generation();
        let entry = registry.find(&self.name, timeout).await?;
        self.remember(generation, &entry);
        Ok(entry)
    }

    /// Send a one-way message (MessagePack bytes by convention).
    ///
    /// Returns once the message is queued for the server, not handled. An
    /// undecodable message is dropped by the server (and counted). When
    /// the server is on another node and its link holds as many bytes of
    /// messages as it may (`NodeConfig::max_queued`), this waits until the
    /// link has room (back-pressure; see [`ServerRef::try_cast`] to drop
    /// the message instead). Cancel-safe: dropped while it waits, it has
    /// sent nothing. Casts awaited one after another arrive in order.
    pub async fn cast(&self, msg: Bytes) -> Result<(), Error> {
        let again = msg.clone();
        self.cast_with(msg, || Ok(again)).await
    }

    /// Send a one-way message without waiting for room: like
    /// [`ServerRef::cast`], but a full link fails at once with
    /// [`CoreError::LinkBusy`] (the message was not sent), for callers that
    /// prefer dropping messages to waiting.
    pub fn try_cast(&self, msg: Bytes) -> Result<(), Error> {
        self.try_cast_with(msg.clone(), || Ok(msg.clone()))
    }

    /// Cast `msg`, waiting for room; if the cached server has stopped,
    /// resolve the name again and cast `again()` (so the hot path never
    /// clones the message).
    pub(crate) async fn cast_with(
        &self,
        msg: Bytes,
        again: impl FnOnce() -> Result<Bytes, Error>,
    ) -> Result<(), Error> {
        // The cached entry's cast, started under the lock and awaited
        // after it; the message back if nothing is cached.
        let sending = match self.lock().as_ref() {
            Some(cached) => Ok(cached.entry.endpoint().cast(msg)),
            None => Err(msg),
        };
        match sending {
            Ok(sending) => match sending.await {
                Err(CoreError::ServerStopped { .. }) => {} // restarted? resolve again
                r => return r.map_err(Error::from),
            },
            Err(msg) => return self.find_and_cast(msg).await,
        }
        self.find_and_cast(again()?).await
    }

    /// Find the server (through the directory if need be) and cast `msg`
    /// to it, waiting for room: the slow path of a cast, boxed so that
    /// the future of every cast stays small (it is moved on each cast).
    fn find_and_cast(&self, msg: Bytes) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async move { Ok(self.find(FIND_TIMEOUT).await?.endpoint().cast(msg).await?) })
    }

    /// [`ServerRef::cast_with`] without waiting for room.
    pub(crate) fn try_cast_with(
        &self,
        msg: Bytes,
        again: impl FnOnce() -> Result<Bytes, Error>,
    ) -> Result<(), Error> {
        {
            let cached = self.lock();
            if let Some(cached) = cached.as_ref() {
                match cached.entry.endpoint().try_cast(msg) {
                    Err(CoreError::ServerStopped { .. }) => {} // restarted? resolve again
                    r => return r.map_err(Error::from),
                }
            } else {
                drop(cached);
                return Ok(self.resolve()?.endpoint().try_cast(msg)?);
            }
        }
        Ok(self.resolve()?.endpoint().try_cast(again()?)?)
    }

    /// Send a request and wait at most `timeout` for the reply (finding the
    /// server through the node's directory, if it takes that, included).
    ///
    /// Errors: [`CoreError::NotFound`], [`CoreError::Timeout`] (the server
    /// may still handle the request), [`CoreError::ServerStopped`] (it
    /// stopped or failed before replying, with the reason),
    /// [`CoreError::Decode`] (it could not decode the request).
    ///
    /// Cancel-safe in the sense that dropping the future abandons the call;
    /// the server may still handle it. A `timeout` too long to be a
    /// deadline (such as [`Duration::MAX`]) waits as long as it takes.
    pub async fn call(&self, msg: Bytes, timeout: Duration) -> Result<Bytes, Error> {
        self.call_with(timeout, |entry, _| async move {
            entry.endpoint().call(msg).await
        })
        .await
    }

    /// Resolve the name (through the directory if need be) and run `send`
    /// on the entry, all within `timeout`. `send` also gets the instant
    /// the deadline is counted from (for a server's latency figure,
    /// without a clock read of its own).
    pub(crate) async fn call_with<T, F>(
        &self,
        timeout: Duration,
        send: impl FnOnce(Entry, Instant) -> F,
    ) -> Result<T, Error>
    where
        F: Future<Output = Result<T, CoreError>>,
    {
        // A name registered here is found without waiting.
        let (entry, left) = match self.current() {
            Ok(entry) => (entry, timeout),
            Err(_) => {
                let start = tokio::time::Instant::now();
                let entry = self.find(timeout).await?;
                (entry, timeout.saturating_sub(start.elapsed()))
            }
        };
        let started = Instant::now();
        match tokio::time::Instant::from_std(started).checked_add(left) {
            Some(deadline) => match crate::deadline::within(deadline, send(entry, started)).await {
                Some(r) => Ok(r?),
                None => Err(CoreError::Timeout {
                    name: self.name.to_string(),
                    after: timeout,
                }
                .into()),
            },
            None => Ok(send(entry, started).await?),
        }
    }

    /// Cast `value` to the cached server if it is in this process and
    /// takes `T`, without encoding it. The value back when nothing is
    /// cached, the server is elsewhere or takes another type, or it has
    /// stopped: for the bytes path, which resolves the name again.
    pub(crate) fn cast_value<T: Send + 'static>(&self, value: T) -> Result<Result<(), Error>, T> {
        let mut cached = self.lock();
        let Some(local) = cached
            .as_ref()
            .and_then(|cached| LocalEndpoint::<T>::of(&cached.entry))
        else {
            return Err(value);
        };
        match local.post_cast(Payload::Value(value)) {
            Ok(()) => Ok(Ok(())),
            Err((_, Some(Payload::Value(value)))) => {
                // Stopped: the bytes path resolves the name at once.
                *cached = None;
                Err(value)
            }
            Err((e, _)) => Ok(Err(e.into())),
        }
    }

    /// Open a duplex pipe to the server's port `port`: the server gets one
    /// end (in [`Server::handle_pipe`](crate::Server::handle_pipe)), the
    /// caller the other.
    pub async fn open_pipe(&self, port: &str) -> Result<PipeEnd, Error> {
        let entry = self.find(FIND_TIMEOUT).await?;
        let (mine, theirs) = self.kernel.duplex();
        entry.endpoint().open_pipe(port, theirs).await?;
        Ok(mine)
    }
}

/// A [`ServerRef`] that encodes requests of type `Req` and decodes replies
/// of type `Rep` (MessagePack, see [`encode`]).
pub struct TypedRef<Req, Rep> {
    raw: ServerRef,
    _types: PhantomData<fn(Req) -> Rep>,
}

impl<Req, Rep> Clone for TypedRef<Req, Rep> {
    fn clone(&self) -> Self {
        Self {
            raw: self.raw.clone(),
            _types: PhantomData,
        }
    }
}

impl<Req, Rep> fmt::Debug for TypedRef<Req, Rep> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TypedRef")
            .field("name", &self.raw.name)
            .field("request", &std::any::type_name::<Req>())
            .field("reply", &std::any::type_name::<Rep>())
            .finish()
    }
}

/// Encode `value` as MessagePack, the way servers and refs do: compact,
/// structs as arrays of their fields in declaration order. (Decoding
/// accepts structs encoded as maps too.)
///
/// Small messages are carved out of a per-thread buffer, so encoding does
/// not allocate per message (a buffer block is freed once every message
/// carved from it is dropped).
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Bytes, Error> {
    Ok(encode_core(value)?)
}

pub(crate) fn encode_core<T: Serialize + ?Sized>(value: &T) -> Result<Bytes, CoreError> {
    thread_local! {
        static BUF: RefCell<BytesMut> = RefCell::new(BytesMut::new());
    }
    const BLOCK: usize = 8 * 1024;
    let fresh = || {
        let mut buf = Vec::with_capacity(64);
        rmp_serde::encode::write(&mut buf, value).map_err(|e| CoreError::Encode(e.to_string()))?;
        Ok(Bytes::from(buf))
    };
    BUF.with(|cell| {
        // A Serialize impl that itself encodes finds the buffer busy.
        let Ok(mut buf) = cell.try_borrow_mut() else {
            return fresh();
        };
        if buf.capacity() - buf.len() < 256 {
            buf.reserve(BLOCK);
        }
        let written = rmp_serde::encode::write(&mut (&mut *buf).writer(), value);
        match written {
            Ok(()) => Ok(buf.split().freeze()),
            Err(e) => {
                buf.clear();
                Err(CoreError::Encode(e.to_string()))
            }
        }
    })
}

/// Decode MessagePack bytes.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    Ok(rmp_serde::from_slice(bytes).map_err(|e| CoreError::Decode(e.to_string()))?)
}

/// A request handed to a [`TypedRef`]: borrowed or owned.
///
/// Both convert into it, so `cast(&req)` and `cast(req)` both work. A
/// borrowed request is always encoded as MessagePack. An owned one is
/// moved, without encoding, to a server in this process whose
/// [`Server::Request`](crate::Server::Request) is the same type; to any
/// other server it is encoded like a borrowed one. The reply comes back
/// the same way. So a type whose `Deserialize` does not give back exactly
/// what its `Serialize` wrote (a skipped field, a lossy conversion)
/// arrives unchanged in this process and changed on another node: pass
/// such a request by reference to get the same behaviour everywhere.
#[derive(Debug)]
pub enum Outgoing<'a, T> {
    /// A borrowed request, encoded.
    Borrowed(&'a T),
    /// An owned request, moved when the server is local and takes `T`.
    Owned(T),
}

impl<'a, T> From<&'a T> for Outgoing<'a, T> {
    fn from(value: &'a T) -> Self {
        Outgoing::Borrowed(value)
    }
}

impl<T> From<T> for Outgoing<'_, T> {
    fn from(value: T) -> Self {
        Outgoing::Owned(value)
    }
}

impl<T: Serialize> Outgoing<'_, T> {
    /// The request as MessagePack bytes.
    fn encode(&self) -> Result<Bytes, Error> {
        Ok(self.encode_core()?)
    }

    fn encode_core(&self) -> Result<Bytes, CoreError> {
        match self {
            Outgoing::Borrowed(v) => encode_core(*v),
            Outgoing::Owned(v) => encode_core(v),
        }
    }
}

impl<Req: Serialize + Send + 'static, Rep: DeserializeOwned + Send + 'static> TypedRef<Req, Rep> {
    /// The server's name.
    pub fn name(&self) -> &str {
        self.raw.name()
    }

    /// The untyped reference.
    pub fn raw(&self) -> &ServerRef {
        &self.raw
    }

    /// Send a one-way request, `&req` or `req` (see [`Outgoing`]),
    /// waiting for room on a full link (see [`ServerRef::cast`]).
    pub async fn cast<'a>(&self, req: impl Into<Outgoing<'a, Req>>) -> Result<(), Error>
    where
        Req: 'a,
    {
        let req = match self.cast_local(req.into()) {
            Ok(sent) => return sent,
            Err(req) => req,
        };
        self.raw.cast_with(req.encode()?, || req.encode()).await
    }

    /// Send a one-way request without waiting for room (see
    /// [`ServerRef::try_cast`]).
    pub fn try_cast<'a>(&self, req: impl Into<Outgoing<'a, Req>>) -> Result<(), Error>
    where
        Req: 'a,
    {
        let req = match self.cast_local(req.into()) {
            Ok(sent) => return sent,
            Err(req) => req,
        };
        self.raw.try_cast_with(req.encode()?, || req.encode())
    }

    /// Cast an owned request to the cached server as a value, if it is in
    /// this process and takes `Req`; the request back otherwise, to encode.
    fn cast_local<'a>(
        &self,
        req: Outgoing<'a, Req>,
    ) -> Result<Result<(), Error>, Outgoing<'a, Req>> {
        match req {
            Outgoing::Owned(v) => self.raw.cast_value(v).map_err(Outgoing::Owned),
            borrowed => Err(borrowed),
        }
    }

    /// Send a request, `&req` or `req` (see [`Outgoing`]), and wait at
    /// most `timeout` for the reply (see [`ServerRef::call`]).
    pub async fn call<'a>(
        &self,
        req: impl Into<Outgoing<'a, Req>>,
        timeout: Duration,
    ) -> Result<Rep, Error>
    where
        Req: 'a,
    {
        let req = req.into();
        self.raw
            .call_with(timeout, |entry, started| async move {
                let Some(local) = LocalEndpoint::<Req>::of(&entry) else {
                    let reply = entry.endpoint().call(req.encode_core()?).await?;
                    return Payload::Bytes(reply).into_value();
                };
                let msg = match req {
                    Outgoing::Owned(v) => Payload::Value(v),
                    req => Payload::Bytes(req.encode_core()?),
                };
                local
                    .post_call(msg, local.replies::<Rep>(), started)
                    .await?
                    .into_value()
            })
            .await
    }

    /// Open a duplex pipe to the server's port `port` (see
    /// [`ServerRef::open_pipe`]).
    pub async fn open_pipe(&self, port: &str) -> Result<PipeEnd, Error> {
        self.raw.open_pipe(port).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Bad;

    impl Serialize for Bad {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            use serde::ser::{Error as _, SerializeSeq};
            let mut seq = s.serialize_seq(Some(2))?;
            seq.serialize_element(&1u8)?;
            Err(S::Error::custom("no way"))
        }
    }

    struct Nested;

    impl Serialize for Nested {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            // Encoding from inside an encode must not panic on the buffer.
            let inner = encode(&"inner").map_err(serde::ser::Error::custom)?;
            s.serialize_bytes(&inner)
        }
    }

    #[test]
    fn encode_error_leaves_no_garbage() {
        let err = encode(&Bad).unwrap_err();
        assert!(matches!(err, Error::Core(CoreError::Encode(m)) if m.contains("no way")));
        let ok = encode(&(7u32, "x")).unwrap();
        assert_eq!(decode::<(u32, String)>(&ok).unwrap(), (7, "x".to_owned()));
    }

    #[test]
    fn encode_is_reentrant_and_messages_are_independent() {
        let a = encode(&Nested).unwrap();
        let many: Vec<Bytes> = (0..5000u32).map(|i| encode(&i).unwrap()).collect();
        for (i, b) in many.iter().enumerate() {
            assert_eq!(decode::<u32>(b).unwrap() as usize, i);
        }
        let inner: serde_bytes_like::Buf = decode(&a).unwrap();
        assert_eq!(decode::<String>(&inner.0).unwrap(), "inner");
    }

    mod serde_bytes_like {
        /// Bytes decoded from a MessagePack bin.
        pub(super) struct Buf(pub(super) Vec<u8>);

        impl<'de> serde::Deserialize<'de> for Buf {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl serde::de::Visitor<'_> for V {
                    type Value = Buf;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str("bytes")
                    }
                    fn visit_bytes<E>(self, v: &[u8]) -> Result<Buf, E> {
                        Ok(Buf(v.to_vec()))
                    }
                }
                d.deserialize_bytes(V)
            }
        }
    }
}
