"""oscloud for Python: script servers in Python and drop them into a cloud.

A :class:`Node` is an oscloud kernel with links to other nodes (Rust or
Python, in this process, over TCP or Unix sockets). Servers registered on
any linked node are reached by name, exactly like local ones::

    import asyncio
    import oscloud

    async def main() -> None:
        node = await oscloud.Node.start(listen=["tcp://127.0.0.1:7000"])

        @node.server("upper", accepts=["text"])
        async def upper(text: str) -> str:
            return text.upper()

        ref = await node.lookup("upper")
        print(await ref.call("hello", timeout=1.0))   # HELLO
        await node.stop()

    asyncio.run(main())

Messages are Python values made of None, bool, int, float, str, bytes,
list, tuple and dict, carried as MessagePack with the same encoding Rust
servers use (``oscloud_actors::encode``): a Rust ``String`` is a Python
``str``, a tuple or struct is a list, a map is a dict.

Everything that waits is a coroutine run by the asyncio event loop; the
Rust side never blocks the loop and does not hold the GIL while it waits.
"""

from __future__ import annotations

import inspect
from types import TracebackType
from typing import (
    Any,
    AsyncIterator,
    Callable,
    Iterable,
    List,
    Mapping,
    Optional,
    Sequence,
    Type,
    Union,
)

from . import _native
from ._native import (
    Caller,
    Entry,
    Link,
    LinkClose,
    RegistryEvent,
    Route,
    RttHistogram,
    decode,
    encode,
    keygen,
    node_settings,
)
from .errors import (
    DecodeError,
    EncodeError,
    Error,
    InvalidAddress,
    InvalidName,
    LinkBusy,
    LinkError,
    NameTaken,
    NoSuchPort,
    NotFound,
    PipeClosed,
    PipeFull,
    RemoteError,
    ServerStopped,
    StartFailed,
    Timeout,
    UsageError,
)
from . import pool
from .pool import JobFailed, Pool, PoolBusy

__all__ = [
    "Pool",
    "PoolBusy",
    "JobFailed",
    "pool",
    "Node",
    "ServerRef",
    "ServerHandle",
    "Pipe",
    "Entry",
    "RegistryEvent",
    "Watch",
    "Link",
    "LinkClose",
    "RttHistogram",
    "Route",
    "Caller",
    "keygen",
    "node_settings",
    "encode",
    "decode",
    "Error",
    "NotFound",
    "Timeout",
    "ServerStopped",
    "RemoteError",
    "DecodeError",
    "EncodeError",
    "NoSuchPort",
    "NameTaken",
    "InvalidName",
    "InvalidAddress",
    "LinkError",
    "LinkBusy",
    "PipeClosed",
    "PipeFull",
    "StartFailed",
    "UsageError",
]

__version__ = "0.1.0"


class ServerRef:
    """A reference to a server by name, on this node or a linked one.

    It resolves the name on every use, so it survives restarts of the
    server (and finds a server that appears later).
    """

    def __init__(self, native: _native.ServerRef) -> None:
        self._native = native

    @property
    def name(self) -> str:
        """The server's name."""
        return self._native.name

    async def call(
        self, message: Any, timeout: float = 5.0, traceparent: Optional[str] = None
    ) -> Any:
        """Send ``message`` and wait at most ``timeout`` seconds for the reply.

        With ``traceparent`` (a W3C Trace Context header,
        ``00-<32 hex>-<16 hex>-<2 hex>``) the call belongs to that trace:
        the server gets it (``with_trace=True``), and so does every node on
        the way (docs/PROTOCOL.md §4.2, docs/TRACING.md). A handler passes
        the one it got on with the calls it makes. :class:`UsageError` if it
        is not a traceparent.

        Raises :class:`NotFound`, :class:`Timeout` (the server may still
        handle it), :class:`RemoteError` (the server failed handling it),
        :class:`ServerStopped`, :class:`DecodeError` (the server could not
        decode it), :class:`EncodeError` (``message`` has no MessagePack
        form). Cancelling the await abandons the call: the server may still
        handle it, and the reply is dropped.
        """
        return await self._native.call(message, timeout, traceparent)

    async def cast(self, message: Any, traceparent: Optional[str] = None) -> None:
        """Send ``message`` one way; returns once it is queued for the
        server (not handled). While the link to the server's node holds as
        many bytes of messages as it may, this waits until it has room
        (back-pressure); otherwise it is queued at once, without a trip
        through the event loop, and casts awaited one after another keep
        their order. Raises :class:`NotFound`, :class:`ServerStopped`,
        :class:`EncodeError`. ``traceparent`` as for :meth:`call`."""
        pending = self._native.cast(message, traceparent)
        if pending is not None:
            await pending

    def try_cast(self, message: Any, traceparent: Optional[str] = None) -> None:
        """Send ``message`` one way without waiting: queued at once, or,
        when the link to the server's node is full, :class:`LinkBusy` (a
        :class:`LinkError`) is raised and the message is not sent (for
        callers that prefer dropping messages to waiting). A plain function,
        not a coroutine: the fastest way to send from Python. Raises
        :class:`NotFound`, :class:`ServerStopped`, :class:`EncodeError`
        too. ``traceparent`` as for :meth:`call`."""
        self._native.try_cast(message, traceparent)

    async def cast_many(
        self, messages: Iterable[Any], traceparent: Optional[str] = None
    ) -> None:
        """Send every message of ``messages`` one way, in order, with one
        call into the native side: each is encoded first (an
        :class:`EncodeError` sends none of them), then they are queued while
        the link has room, and the rest wait for room as :meth:`cast` does.
        Returns once every one is queued. Raises :class:`NotFound`,
        :class:`ServerStopped` (the ones before it were sent).
        ``traceparent`` as for :meth:`call`, for every message."""
        pending = self._native.cast_many(messages, traceparent)
        if pending is not None:
            await pending

    async def open_pipe(self, port: str) -> "Pipe":
        """Open a duplex pipe to the server's ``port``: the server gets one
        end, this returns the other. Raises :class:`NoSuchPort` if the
        server takes no pipe there."""
        return Pipe(await self._native.open_pipe(port))

    def __repr__(self) -> str:
        return f"<oscloud.ServerRef {self.name!r}>"


class Pipe:
    """One end of a duplex, back-pressured pipe of byte frames.

    Read it with ``await pipe.recv()`` (None at the end),
    ``await pipe.recv_many()`` (every frame buffered, empty at the end) or
    ``async for frame in pipe``; write with ``await pipe.send(frame)``,
    ``await pipe.send_many(frames)`` or, without waiting,
    ``pipe.try_send(frame)``; ``pipe.close()`` ends this side's stream.
    """

    def __init__(self, native: _native.Pipe) -> None:
        self._native = native

    async def send(self, frame: bytes) -> None:
        """Write one frame, waiting while the pipe is full (written at once,
        without a trip through the event loop, when it has room). Raises
        :class:`PipeClosed` when the other end is gone or this side was
        closed."""
        pending = self._native.send(frame)
        if pending is not None:
            await pending

    def try_send(self, frame: bytes) -> None:
        """Write one frame without waiting: written at once, or, when the
        pipe is full, :class:`PipeFull` is raised and the frame is not
        written. A plain function, not a coroutine. Raises
        :class:`PipeClosed` too."""
        self._native.try_send(frame)

    async def send_many(self, frames: Iterable[bytes]) -> None:
        """Write every frame of ``frames``, in order, with one call into the
        native side: written at once while the pipe has room, the rest as
        room comes. Returns once every one is written. Raises
        :class:`PipeClosed` (the ones before it were written)."""
        pending = self._native.send_many(frames)
        if pending is not None:
            await pending

    async def drained(self) -> None:
        """Wait until every frame sent on this end was taken by the pipe's
        reader (for a pipe to another node: by the link that carries it),
        or the reader is gone. Raises :class:`PipeClosed` once this side
        was closed. Bound it with ``asyncio.wait_for``: nothing is lost if
        it is cancelled."""
        await self._native.drained()

    async def recv(self) -> Optional[bytes]:
        """The next frame; None once the other side closed its stream and
        everything it sent was read. A frame already buffered is returned
        without a trip through the event loop."""
        frames = self._native.take(1)
        if frames is None:
            return None
        if frames:
            return frames[0]
        return await self._native.recv()

    async def recv_many(self, limit: int = 64) -> List[bytes]:
        """The frames buffered now, at most ``limit`` (waiting for the first
        if none is); an empty list once the other side closed its stream
        and everything it sent was read. One call into the native side for
        all of them."""
        frames = self._native.take(limit)
        if frames is None:
            return []
        if frames:
            return frames
        first = await self._native.recv()
        if first is None:
            return []
        more = self._native.take(limit - 1) if limit > 1 else None
        return [first] + (more or [])

    def close(self) -> None:
        """End this side's stream: the other end reads None after what was
        sent. Reading goes on."""
        self._native.close()

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._frames()

    async def _frames(self) -> AsyncIterator[bytes]:
        while True:
            frames = await self.recv_many()
            if not frames:
                return
            for frame in frames:
                yield frame

    def __repr__(self) -> str:
        return repr(self._native)


class ServerHandle:
    """A Python server started with :meth:`Node.server` (what the decorator
    returns)."""

    def __init__(self, native: _native.ServerHandle, target: Any) -> None:
        self._native = native
        #: The decorated function or class.
        self.target = target

    @property
    def name(self) -> str:
        """The server's registered name."""
        return self._native.name

    @property
    def restarts(self) -> int:
        """How many times its supervisor restarted it."""
        return self._native.restarts

    @property
    def running(self) -> bool:
        """Whether it runs now (False once stopped, or once its supervisor
        gave up after too many failures)."""
        return self._native.running

    async def stop(self) -> None:
        """Stop the server (it leaves the registry) and its supervisor."""
        await self._native.stop()

    async def wait(self) -> None:
        """Wait until its supervisor ends. Raises :class:`Error` if it gave
        up (more than ``max_restarts`` failures within ``period``)."""
        await self._native.wait()

    def __repr__(self) -> str:
        return f"<oscloud.ServerHandle {self.name!r}>"


class Watch:
    """An async iterator over registry changes (:class:`RegistryEvent`):
    first one ``added`` event per server present when it was made, then
    every change in order. Events are never dropped."""

    def __init__(self, native: _native.Watch) -> None:
        self._native = native

    async def next(self, timeout: Optional[float] = None) -> Optional[RegistryEvent]:
        """The next change; with ``timeout``, None if none came within that
        many seconds."""
        return await self._native.next(timeout)

    def __aiter__(self) -> "Watch":
        return self

    async def __anext__(self) -> RegistryEvent:
        ev = await self._native.next(None)
        if ev is None:
            raise StopAsyncIteration
        return ev


class Node:
    """An oscloud node: a kernel (registry and pipes) plus links to other
    nodes. Create one with ``await Node.start(...)``.

    Use it as an async context manager to stop it at the end::

        async with await oscloud.Node.start() as node:
            ...
    """

    def __init__(self, native: _native.Node) -> None:
        """Wrap a native node; use :meth:`Node.start` instead."""
        self._native = native

    @classmethod
    async def start(
        cls,
        listen: Sequence[str] = (),
        connect: Sequence[str] = (),
        *,
        key: Optional[str] = None,
        allow: Sequence[str] = (),
        allow_file: Optional[str] = None,
        psk: Optional[bytes] = None,
        open: bool = False,
        config: Optional[Mapping[str, Union[str, int, float]]] = None,
    ) -> "Node":
        """Start a node on the running event loop.

        ``listen``: addresses to accept links at (``tcp://host:port``, a port
        of 0 picks a free one; ``unix:///path``; ``ws://host:port/path`` and
        ``wss://host:port/path`` (WebSocket);
        ``zenoh://router:7447/<cloud>/<node>`` through zenoh routers;
        ``mem://name`` for nodes of this process). ``connect``: addresses to dial; each is linked (the
        handshake done) before this returns, and dialled again with backoff
        if the link drops later.

        Security: with ``key`` (the path of a node key file, made with mode
        0600 if missing; see :func:`keygen`), the node's id derives from the
        key and every link runs a Noise handshake and is encrypted. Only
        peers whose public key is in ``allow`` or in the allow-list file
        ``allow_file`` (one key per line, ``#`` comments) are admitted; an
        unknown peer is refused (:class:`LinkError` when dialling), with a
        log line on both sides. ``psk`` (32 bytes) must then match on both
        sides too. ``open=True`` admits every peer (development only). Peers
        of a secure node must be secure nodes.

        ``config``: node settings by name, e.g. ``{"resume_grace": 30,
        "idle_timeout": "1.5s", "pipe_window": "64KiB"}``; a number given for
        a duration is seconds. The names are the fields of Rust's
        ``NodeConfig``, listed with their kinds by :func:`node_settings`
        (among them ``link_budget``, the bytes of replies and casts one
        link's peer may make the node hold, and ``max_serving``, the calls
        from one link served at once); an unknown name, a bad value or a
        keepalive not shorter than the idle timeout raises
        :class:`UsageError` saying which.

        Python servers of this node run on the event loop running now.
        """
        settings = [(k, str(v)) for k, v in (config or {}).items()]
        native = await _native.Node.start(
            list(listen),
            list(connect),
            key,
            list(allow),
            allow_file,
            psk,
            open,
            settings,
        )
        return cls(native)

    @property
    def id(self) -> str:
        """This node's id (32 hex digits)."""
        return self._native.id

    @property
    def public_key(self) -> Optional[str]:
        """This node's public key (64 hex digits), if started with a key."""
        return self._native.public_key

    def allow(self, key: str) -> None:
        """Admit the peer with this public key from now on (secure nodes)."""
        self._native.allow(key)

    def revoke(self, key: str) -> None:
        """Stop admitting the peer with this public key: new handshakes are
        refused and its live links are dropped (secure nodes)."""
        self._native.revoke(key)

    def reload_allow_list(self) -> None:
        """Read the ``allow_file`` again; peers no longer on it lose their
        links."""
        self._native.reload_allow_list()

    def allowed_keys(self) -> List[str]:
        """The public keys admitted now (secure nodes)."""
        return self._native.allowed_keys()

    def links(self) -> List[Link]:
        """Every link of this node now: addresses, peer, whether it is up,
        reconnects, the wire counters in ``stats`` (frames, bytes,
        retransmissions, ``auth_failures``, ``replays``, ...), the
        measured round trip ``rtt_us`` and its histogram ``probe_rtt``,
        ``credit_stalls``, ``send_queue_bytes``, and ``closed`` once its
        session closed."""
        return self._native.links()

    def routes(self) -> List[Route]:
        """Every route this node knows to the servers of other nodes (its
        neighbours' own servers included, as one-hop routes), sorted by
        server name, the route in use first: ``name``, ``node`` (where the
        server lives), ``path`` (node ids, the server's node first, the
        neighbour the route goes through last), ``cost``, ``link`` (a
        :attr:`Link.id`) and ``best``."""
        return self._native.routes()

    def close_link(self, id: int) -> bool:
        """Close the link ``id`` (a :attr:`Link.id`) for good: its session
        ends, the routes through it are withdrawn (servers left with no
        route leave the registry), and a link this node dialled is not
        dialled again (a peer that dialled it may dial again). Returns at
        once, False if there is no such link; the link leaves
        :meth:`links` shortly after."""
        return self._native.close_link(id)

    @property
    def addresses(self) -> List[str]:
        """The addresses this node listens at, as bound."""
        return self._native.addresses

    async def listen(self, address: str) -> str:
        """Listen at one more address; returns the address bound."""
        return await self._native.listen(address)

    async def connect(self, address: str) -> str:
        """Link to the node at ``address``; returns its id."""
        return await self._native.connect(address)

    async def lookup(self, name: str, wait: Optional[float] = None) -> ServerRef:
        """A reference to the server ``name`` (on this node or a linked one).

        Raises :class:`NotFound` if it is not registered; with ``wait``,
        waits up to that many seconds for it to appear first.
        """
        return ServerRef(await self._native.lookup(name, wait))

    def server_ref(self, name: str) -> ServerRef:
        """A reference to ``name`` that is resolved on every use (it need
        not exist yet)."""
        return ServerRef(self._native.server_ref(name))

    def server(
        self,
        name: str,
        *,
        accepts: Sequence[str] = (),
        produces: Sequence[str] = (),
        group: bool = False,
        restart: str = "permanent",
        max_restarts: int = 3,
        period: float = 5.0,
        with_caller: bool = False,
        ports: Mapping[str, str] = {},
        with_trace: bool = False,
    ) -> Callable[[Any], ServerHandle]:
        """Register a Python server under ``name``: a decorator for an async
        function or a class.

        A **function** ``async def f(message) -> reply`` handles both calls
        (its result is the reply) and casts (its result is ignored). It may
        also be a plain function.

        A **class** is instantiated (with no arguments) each time the server
        starts, so its attributes are the server's state, fresh after every
        restart. Its optional methods:

        - ``async def handle_call(self, message) -> reply``
        - ``async def handle_cast(self, message) -> None``
        - ``async def handle_casts(self, messages: list) -> None``: if
          defined, it gets the casts instead of ``handle_cast``, as lists
          in order: the casts waiting in the server's mailbox, at most 64
          per list, with one Python call per list (the fastest way to
          take many casts). With ``with_caller`` or ``with_trace``, each
          item is the tuple of arguments ``handle_cast`` would get
          (``(message, caller, traceparent)``), otherwise the message.
        - ``async def handle_pipe(self, port: str, pipe: Pipe) -> bool``:
          return True to take the pipe (read it in a task of your own),
          False to refuse the port.

        A handler that raises makes the server fail: the caller gets
        :class:`RemoteError` with the exception's type and message, and the
        server's supervisor restarts it (``restart``: ``"permanent"``,
        ``"transient"`` or ``"temporary"``), giving up after more than
        ``max_restarts`` restarts within ``period`` seconds. Handlers of
        one server run one message at a time.

        With ``with_caller=True``, call and cast handlers get a second
        argument: the :class:`Caller` (``caller.node``, and ``caller.key``
        on encrypted links, verified by the handshake), or None when the
        message came from this node.

        With ``with_trace=True``, call and cast handlers get one more, last
        argument: the ``traceparent`` of the trace the message belongs to
        (a W3C Trace Context header, as a str), or None when the caller
        gave none (docs/PROTOCOL.md §4.2). To keep the calls a handler makes
        in the same trace, pass it on: ``ref.call(x, traceparent=tp)``.

        ``accepts``/``produces`` are advertised in the registry, and so
        are ``ports``, the pipe ports ``handle_pipe`` takes, each with the
        way data flows (``{"in": "in", "out": "out"}``; ``"in"``: the server
        reads, ``"out"``: it writes, ``"both"``), which peers and
        ``oscloud ls`` show; ``group``
        joins a group of servers sharing the name (lookups then go
        round-robin).

        The decorator returns a :class:`ServerHandle`; the server is
        registered when it returns.
        """

        def register(target: Any) -> ServerHandle:
            is_class = inspect.isclass(target)
            if not is_class and not callable(target):
                raise UsageError(f"Node.server needs a function or a class, not {target!r}")
            native = self._native._serve(
                name,
                target,
                is_class,
                list(accepts),
                list(produces),
                group,
                restart,
                max_restarts,
                period,
                with_caller,
                list(ports.items()),
                with_trace,
            )
            return ServerHandle(native, target)

        return register

    def servers(self, prefix: Optional[str] = None) -> List[Entry]:
        """Every server in the registry now (local and on linked nodes),
        optionally only those whose name starts with ``prefix``."""
        return self._native.servers(prefix)

    def watch(self) -> Watch:
        """An async iterator over registry changes: first one ``added``
        event per server present now, then every change in order."""
        return Watch(self._native.watch())

    def peers(self) -> List[str]:
        """The ids of the nodes linked now."""
        return self._native.peers()

    async def stop(self) -> None:
        """Stop the servers started on this node and drop every link."""
        await self._native.stop()

    async def __aenter__(self) -> "Node":
        return self

    async def __aexit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        await self.stop()

    def __repr__(self) -> str:
        return repr(self._native)
