"""The exceptions oscloud raises.

Every one derives from :class:`oscloud.Error`; where a built-in exception
fits, they derive from it too (``Timeout`` is a ``TimeoutError``,
``EncodeError`` a ``TypeError``, ...), so ordinary ``except`` clauses work.
"""

from __future__ import annotations

from typing import Optional

__all__ = [
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


class Error(Exception):
    """Base class of every oscloud error."""


class NotFound(Error, LookupError):
    """No server is registered under the name (``server``)."""

    server: str


class Timeout(Error, TimeoutError):
    """A call was not answered within ``after`` seconds. The server may still
    handle it."""

    server: str
    after: float


class ServerStopped(Error):
    """The server (``server``) stopped before it answered; ``reason`` says
    why (``"normal exit"``, a failure, ``"link down: ..."``)."""

    server: str
    reason: str


class RemoteError(ServerStopped):
    """The server failed while handling the request.

    For a Python server, ``remote_type`` is the name of the exception its
    handler raised (``"ValueError"``, ``"mymodule.MyError"``) and
    ``remote_message`` its text. The server itself was stopped and is
    restarted by its supervisor as its policy says.
    """

    remote_type: Optional[str]
    remote_message: str


class DecodeError(Error, ValueError):
    """A message could not be decoded (by the server, or this side)."""


class EncodeError(Error, TypeError):
    """A value has no MessagePack form (use None, bool, int, float, str,
    bytes, list, tuple or dict)."""


class NoSuchPort(Error):
    """The server (``server``) takes no pipe on ``port``."""

    server: str
    port: str


class NameTaken(Error):
    """Another server already holds the name (``server``)."""

    server: str


class InvalidName(Error, ValueError):
    """Not a valid server name (``server``)."""

    server: str


class InvalidAddress(Error, ValueError):
    """Not a valid oscloud address, or no transport serves its scheme."""


class LinkError(Error, ConnectionError):
    """A link could not be made or used (refused, unreachable, address in
    use, bad socket path, handshake failed, ...)."""


class LinkBusy(LinkError):
    """The link to the server's node holds as many bytes of messages as it
    may (the node setting ``max_queued``): raised by the methods that do not wait for room
    (:meth:`ServerRef.try_cast`); the message was not sent."""


class PipeClosed(Error, BrokenPipeError):
    """The other end of the pipe is gone, or this end's writing side was
    closed."""


class PipeFull(Error):
    """The pipe holds as many bytes as it may: raised by the methods that do
    not wait for room (:meth:`Pipe.try_send`); the frame was not written."""


class StartFailed(Error):
    """A server (``server``) could not start: its class raised in
    ``__init__``, or its name was taken (``reason``)."""

    server: str
    reason: str


class UsageError(Error, ValueError):
    """The API was used in a way that cannot work (the message says how)."""
