"""Type stubs for the native module ``oscloud._native`` (Rust, pyo3).

Use the ``oscloud`` package rather than this module directly.
"""

from typing import Any, Awaitable, Dict, Iterable, List, Literal, Optional, Tuple, final

__all__ = [
    "Node",
    "ServerRef",
    "ServerHandle",
    "Entry",
    "RegistryEvent",
    "Watch",
    "Pipe",
    "Link",
    "LinkClose",
    "RttHistogram",
    "Route",
    "Caller",
    "keygen",
    "node_settings",
    "_rust_echo",
    "_start_pool",
    "encode",
    "decode",
    "RAISED_PREFIX",
]

RAISED_PREFIX: str

def encode(value: Any) -> bytes:
    """Encode a value as MessagePack, exactly as a call would."""

def decode(data: bytes) -> Any:
    """Decode MessagePack bytes, exactly as a server would."""

def node_settings() -> List[Tuple[str, str, str]]:
    """Every node setting ``Node.start(config=...)`` accepts, as ``(key,
    kind, help)``; kind is ``duration``, ``bytes`` or ``count``."""

def keygen(path: str) -> str:
    """Make the node key file at ``path`` if it does not exist (mode 0600)
    and return its public key (64 hex digits)."""

def _start_pool(
    node: Node,
    name: str,
    queue_limit: int,
    max_attempts: int,
    per_worker: int,
    attempt_timeout: float,
    job_timeout: float,
) -> None:
    """Start the pool server ``name`` on ``node`` (see ``oscloud.Pool.start``)."""

def _rust_echo(node: Node, name: str) -> None:
    """Register a Rust test server ``name`` on ``node``'s kernel (requests
    are lists of strings: ``["upper", text]``, ``["call", server, text]``,
    ``["whoami"]``, ``["fail", text]``; replies are strings). For tests and
    examples."""

@final
class Node:
    @staticmethod
    def start(
        listen: List[str] = ...,
        connect: List[str] = ...,
        key: Optional[str] = None,
        allow: List[str] = ...,
        allow_file: Optional[str] = None,
        psk: Optional[bytes] = None,
        open: bool = False,
        config: List[Tuple[str, str]] = ...,
    ) -> Awaitable[Node]: ...
    @property
    def id(self) -> str: ...
    @property
    def public_key(self) -> Optional[str]: ...
    def allow(self, key: str) -> None: ...
    def revoke(self, key: str) -> None: ...
    def reload_allow_list(self) -> None: ...
    def allowed_keys(self) -> List[str]: ...
    def links(self) -> List[Link]: ...
    def routes(self) -> List[Route]: ...
    def close_link(self, id: int) -> bool: ...
    @property
    def addresses(self) -> List[str]: ...
    def listen(self, address: str) -> Awaitable[str]: ...
    def connect(self, address: str) -> Awaitable[str]: ...
    def lookup(self, name: str, wait: Optional[float] = None) -> Awaitable[ServerRef]: ...
    def server_ref(self, name: str) -> ServerRef: ...
    def _serve(
        self,
        name: str,
        target: Any,
        is_class: bool,
        accepts: List[str],
        produces: List[str],
        group: bool,
        restart: str,
        max_restarts: int,
        period: float,
        with_caller: bool = False,
        ports: List[Tuple[str, str]] = ...,
        with_trace: bool = False,
    ) -> ServerHandle: ...
    def servers(self, prefix: Optional[str] = None) -> List[Entry]: ...
    def watch(self) -> Watch: ...
    def peers(self) -> List[str]: ...
    def stop(self) -> Awaitable[None]: ...

@final
class ServerRef:
    """A reference to a server by name, local or on a linked node. It
    resolves the name on every use, so it survives restarts."""

    @property
    def name(self) -> str:
        """The server's name."""
    def call(
        self, message: Any, timeout: float = 5.0, traceparent: Optional[str] = None
    ) -> Awaitable[Any]:
        """Send ``message`` and wait at most ``timeout`` seconds for the
        reply. Raises NotFound, Timeout, ServerStopped, RemoteError (the
        server failed handling it), DecodeError, EncodeError. Cancelling
        the await abandons the call (the server may still handle it).
        With ``traceparent`` the call belongs to that trace."""
    def cast(
        self, message: Any, traceparent: Optional[str] = None
    ) -> Optional[Awaitable[None]]:
        """Send ``message`` one way: None once it is queued now; only a
        full link returns an awaitable, done once it is queued."""
    def try_cast(self, message: Any, traceparent: Optional[str] = None) -> None:
        """Send ``message`` one way without waiting; raises LinkBusy at
        once when the link is full (the message not sent)."""
    def cast_many(
        self, messages: Iterable[Any], traceparent: Optional[str] = None
    ) -> Optional[Awaitable[None]]:
        """Send every message one way, in order (all encoded first): None
        once every one is queued now, else an awaitable that queues the
        rest as the link has room."""
    def open_pipe(self, port: str) -> Awaitable[Pipe]:
        """Open a duplex pipe to the server's ``port``; raises NoSuchPort
        if it takes none there."""

@final
class ServerHandle:
    """A Python server started with ``Node.server``."""

    @property
    def name(self) -> str:
        """The server's registered name."""
    @property
    def restarts(self) -> int:
        """How many times its supervisor restarted it."""
    @property
    def running(self) -> bool:
        """Whether it runs now."""
    def stop(self) -> Awaitable[None]:
        """Stop the server and its supervisor."""
    def wait(self) -> Awaitable[None]:
        """Wait until the supervisor ends; raises oscloud.Error if it gave
        up (restart intensity exceeded)."""

@final
class Entry:
    """One registry entry."""

    @property
    def name(self) -> str: ...
    @property
    def node(self) -> str: ...
    @property
    def local(self) -> bool: ...
    @property
    def group(self) -> bool: ...
    @property
    def accepts(self) -> List[str]: ...
    @property
    def produces(self) -> List[str]: ...
    @property
    def ports(self) -> Dict[str, Literal["in", "out", "both"]]:
        """Pipe ports the server takes: name -> which way data flows."""
        ...

@final
class RegistryEvent:
    """A registry change."""

    @property
    def kind(self) -> Literal["added", "removed"]: ...
    @property
    def entry(self) -> Entry: ...
    @property
    def name(self) -> str: ...
    @property
    def reason(self) -> Optional[str]:
        """Why it was removed (``"normal exit"``, ``"failed: ..."``,
        ``"link down: ..."``); None for ``added``."""

@final
class Watch:
    """An async iterator over registry changes."""

    def next(self, timeout: Optional[float] = None) -> Awaitable[Optional[RegistryEvent]]:
        """The next change; with ``timeout``, None if none came in time."""
    def __aiter__(self) -> Watch: ...
    def __anext__(self) -> Awaitable[RegistryEvent]: ...

@final
class Pipe:
    """One end of a duplex, back-pressured pipe of byte frames. Iterate it
    with ``async for frame in pipe``."""

    def send(self, frame: bytes) -> Optional[Awaitable[None]]:
        """Write one frame: None once it is written now; only a full pipe
        returns an awaitable, done once it is written. Raises PipeClosed
        when the other end is gone or this side was closed, and
        UsageError for a frame longer than the pipe takes (for a pipe to
        another node, the peer's pipe window, 256 KiB by default): it is
        not written, and the pipe stays open."""
    def try_send(self, frame: bytes) -> None:
        """Write one frame without waiting; raises PipeFull at once when
        the pipe is full (the frame not written)."""
    def send_many(self, frames: Iterable[bytes]) -> Optional[Awaitable[None]]:
        """Write every frame in order: None once every one is written now,
        else an awaitable that writes the rest as the pipe has room."""
    def take(self, limit: int = 64) -> Optional[List[bytes]]:
        """The frames buffered now, at most ``limit``: an empty list if
        none is (or another read waits), None at the end of the stream."""
    def drained(self) -> Awaitable[None]:
        """Wait until the reader took every frame sent on this end, or is
        gone; raises PipeClosed once this side was closed."""
    def recv(self) -> Awaitable[Optional[bytes]]:
        """The next frame; None at the end of the stream."""
    def close(self) -> None:
        """End this side's stream (the other end reads None); reading
        goes on."""
    def __aiter__(self) -> Pipe: ...
    def __anext__(self) -> Awaitable[bytes]: ...

@final
class Link:
    """One link of a node and its counters."""

    @property
    def id(self) -> int: ...
    @property
    def local(self) -> str: ...
    @property
    def remote(self) -> str: ...
    @property
    def dialed(self) -> Optional[str]: ...
    @property
    def peer(self) -> Optional[str]: ...
    @property
    def connected(self) -> bool: ...
    @property
    def reconnects(self) -> int: ...
    @property
    def stats(self) -> Dict[str, int]: ...
    @property
    def rtt_us(self) -> int:
        """The link's round-trip time in microseconds as the node measures
        it on every kind of link (a probe call the peer node answers at
        once; smoothed); 0 until the first answer."""
    @property
    def credit_stalls(self) -> int:
        """Times a local pipe writer's frame waited for the peer's credit
        on this link (the peer's reader was behind)."""
    @property
    def send_queue_bytes(self) -> int:
        """Bytes waiting to be sent on the link."""
    @property
    def closed(self) -> Optional[LinkClose]:
        """How the link's session closed, once it did; None while it
        runs."""
    @property
    def probe_rtt(self) -> RttHistogram:
        """Every round trip the node's probe measured on the link."""
    @property
    def session_rtt(self) -> RttHistogram:
        """The round trips the session's retransmission timer measured
        (lossy links; empty on reliable streams)."""

@final
class LinkClose:
    """How a link's session closed."""

    @property
    def code(self) -> int:
        """The close code (0 normal, 9 idle timeout, ...)."""
    @property
    def name(self) -> str:
        """The code's name (``"Normal"``, ``"IdleTimeout"``, ...;
        ``"Other"`` for a code this version does not know)."""
    @property
    def message(self) -> str:
        """What happened, in words."""
    @property
    def remote(self) -> bool:
        """Whether the peer closed it."""

@final
class RttHistogram:
    """Round-trip times counted per bucket."""

    @property
    def buckets(self) -> List[int]:
        """Samples per bucket, not cumulative: one per bound of
        ``bounds_ns``, then one for longer round trips."""
    @property
    def bounds_ns(self) -> List[int]:
        """The buckets' upper bounds in nanoseconds (25 µs to 5 s)."""
    @property
    def sum_us(self) -> int:
        """The samples' sum, in microseconds."""
    @property
    def count(self) -> int:
        """Samples counted."""

@final
class Route:
    """A route from a node to a server of another node."""

    @property
    def name(self) -> str:
        """The server's name."""
    @property
    def node(self) -> str:
        """The id of the node the server lives on."""
    @property
    def path(self) -> List[str]:
        """The node ids between here and there: the server's node first,
        the neighbour the route goes through last."""
    @property
    def cost(self) -> int:
        """The sum of the link costs along the path (1 per reliable stream
        link, 10 per serial or datagram link)."""
    @property
    def link(self) -> int:
        """The id of this node's link the route goes through (``Link.id``)."""
    @property
    def best(self) -> bool:
        """Whether it is the route in use."""

@final
class Caller:
    """The node a message came from (for servers registered with
    ``with_caller=True``)."""

    @property
    def node(self) -> str: ...
    @property
    def key(self) -> Optional[str]: ...
