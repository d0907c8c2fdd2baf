"""The pool: every worker of a group, on any node, as one pool of CPUs.

A pool server (Rust, ``oscloud_servers::pool``) spreads jobs over the
workers of a named group by load, sends a job whose worker's node dies to
another worker, and answers each job exactly once. Workers are ordinary
servers in any language: a Python worker of group ``G`` is a server
registered as ``G`` in the group (:func:`worker`), or under a name
starting with ``G/``. A job is the worker's call message, its result the
worker's reply::

    pool = await oscloud.Pool.start(node)           # host one here, or
    pool = oscloud.Pool(node, "pool")               # use one elsewhere

    @oscloud.pool.worker(other_node, "square")
    def square(n: int) -> int:
        return n * n

    print(await pool.map("square", range(10)))      # [0, 1, 4, ..., 81]
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, List

from . import _native
from .errors import Error, LinkError, Timeout

if TYPE_CHECKING:
    from . import Node, ServerHandle

__all__ = ["Pool", "PoolBusy", "JobFailed", "worker"]


class PoolBusy(Error):
    """The pool holds as many jobs as its queue limit: this one was
    refused. Retry later, or slow down."""


class JobFailed(Error):
    """The worker took the job and failed it (its handler raised, or it
    could not decode the job). Not retried. ``reason`` is the worker's
    error (for a Python worker, ``raised Type: message``)."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def worker(
    node: "Node",
    group: str,
    *,
    restart: str = "permanent",
    max_restarts: int = 3,
    period: float = 5.0,
) -> Callable[[Any], "ServerHandle"]:
    """Register a function (or class) as a worker of ``group`` on ``node``:
    a decorator, as :meth:`Node.server` with ``group=True``. Each job's
    item is its message, its return value the job's result."""
    return node.server(
        group,
        group=True,
        restart=restart,
        max_restarts=max_restarts,
        period=period,
    )


class Pool:
    """A pool server, by name: submit jobs to groups of workers."""

    def __init__(self, node: "Node", name: str = "pool") -> None:
        self._ref = node.server_ref(name)
        self.name = name

    @classmethod
    async def start(
        cls,
        node: "Node",
        name: str = "pool",
        *,
        queue_limit: int = 10_000,
        max_attempts: int = 3,
        per_worker: int = 2,
        attempt_timeout: float = 30.0,
        job_timeout: float = 60.0,
    ) -> "Pool":
        """Start a pool server ``name`` on ``node`` (it stops with the
        node) and return it. ``queue_limit``: most jobs queued or running
        (more raise :class:`PoolBusy`); ``max_attempts``: most times a job
        is sent to a worker (1 never retries); ``per_worker``: jobs in
        flight per worker; ``attempt_timeout``: seconds one attempt may
        take before another worker is tried; ``job_timeout``: seconds a
        job may take from submission to its result."""
        _native._start_pool(
            node._native,
            name,
            queue_limit,
            max_attempts,
            per_worker,
            attempt_timeout,
            job_timeout,
        )
        return cls(node, name)

    async def submit(self, group: str, item: Any, timeout: float = 60.0) -> Any:
        """Run one job: ``item`` is sent (as MessagePack) to a worker of
        ``group``, its reply returned. Raises :class:`JobFailed` (the
        worker failed it), :class:`LinkError` (every attempt found its
        worker unreachable), :class:`Timeout`, :class:`PoolBusy`."""
        job = _native.encode(item)
        reply = await self._ref.call({"Submit": [group, job]}, timeout=timeout)
        return _result(self.name, group, reply)

    async def map(self, group: str, items: Iterable[Any], timeout: float = 60.0) -> List[Any]:
        """Run one job per item on the workers of ``group``, all at once,
        and return their results in the order of ``items``. The first
        job that fails raises (see :meth:`submit`); the others are still
        answered by the pool, and dropped."""
        return list(
            await asyncio.gather(*(self.submit(group, item, timeout) for item in items))
        )

    async def stats(self) -> Dict[str, Any]:
        """The pool's counters: ``submitted``, ``done``, ``failed``,
        ``retried``, ``duplicates`` (results dropped because the job was
        answered already), ``refused``, ``pending``, and ``groups``
        (``{group: {"workers", "running", "queued"}}``)."""
        reply = await self._ref.call("Stats")
        fields = reply["Stats"]
        keys = ["submitted", "done", "failed", "retried", "duplicates", "refused", "pending"]
        out: Dict[str, Any] = dict(zip(keys, fields))
        out["groups"] = {
            g: dict(zip(["workers", "running", "queued"], v)) for g, v in fields[7].items()
        }
        return out

    def __repr__(self) -> str:
        return f"<oscloud.Pool {self.name!r}>"


def _result(pool: str, group: str, reply: Any) -> Any:
    if not isinstance(reply, dict) or len(reply) != 1:
        raise Error(f"pool {pool!r} answered {reply!r}")
    ((kind, value),) = reply.items()
    if kind == "Done":
        return _native.decode(value)
    if kind == "Failed":
        raise JobFailed(f"a worker of {group!r} failed the job: {value}", str(value))
    if kind == "GaveUp":
        raise LinkError(f"no worker of {group!r} could be reached: {value}")
    if kind == "TimedOut":
        raise Timeout(f"no result from group {group!r} within {value} ms")
    if kind == "Busy":
        raise PoolBusy(f"pool {pool!r} holds {value} jobs already")
    raise Error(f"pool {pool!r} answered {reply!r}")


