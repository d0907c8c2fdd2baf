"""Two Python nodes linked in-process (mem://), over TCP, over a Unix
socket and over a WebSocket: the server and caller code is the same in
every case."""

from __future__ import annotations

import asyncio
from typing import Any, Tuple

import pytest

import oscloud

from conftest import next_event


async def test_call_cast_across_link(linked: Tuple[oscloud.Node, oscloud.Node]) -> None:
    a, b = linked
    assert b.peers() == [a.id]

    @a.server("kv", accepts=["kv"])
    class Store:
        def __init__(self) -> None:
            self.data: dict = {}

        async def handle_cast(self, msg: list) -> None:
            key, value = msg
            self.data[key] = value

        async def handle_call(self, key: str) -> Any:
            return self.data.get(key)

    ref = await b.lookup("kv", wait=5)
    await ref.cast(["x", {"nested": [1, 2.5, b"\x00"]}])
    assert await ref.call("x") == {"nested": [1, 2.5, b"\x00"]}
    (entry,) = b.servers("kv")
    assert entry.node == a.id and not entry.local and entry.accepts == ["kv"]


async def test_exception_across_link(linked: Tuple[oscloud.Node, oscloud.Node]) -> None:
    a, b = linked

    @a.server("picky")
    async def picky(n: int) -> int:
        if n < 0:
            raise ArithmeticError(f"negative: {n}")
        return n

    ref = await b.lookup("picky", wait=5)
    with pytest.raises(oscloud.RemoteError) as info:
        await ref.call(-3)
    assert info.value.remote_type == "ArithmeticError"
    assert info.value.remote_message == "negative: -3"
    # Restarted on node a, announced again to b: a later call works.
    for _ in range(500):
        try:
            assert await ref.call(7) == 7
            break
        except (oscloud.NotFound, oscloud.ServerStopped):
            await asyncio.sleep(0.01)
    else:
        raise AssertionError("picky did not come back")


async def test_concurrent_calls_across_link(linked: Tuple[oscloud.Node, oscloud.Node]) -> None:
    a, b = linked

    @a.server("inc")
    async def inc(n: int) -> int:
        return n + 1

    ref = await b.lookup("inc", wait=5)
    got = await asyncio.gather(*(ref.call(i, timeout=30) for i in range(1000)))
    assert got == [i + 1 for i in range(1000)]


async def test_cancelled_remote_call(linked: Tuple[oscloud.Node, oscloud.Node]) -> None:
    a, b = linked
    started = asyncio.Event()
    release = asyncio.Event()

    @a.server("gate")
    async def gate(msg: str) -> str:
        if msg == "hold":
            started.set()
            await release.wait()
        return msg

    ref = await b.lookup("gate", wait=5)
    pending = asyncio.create_task(ref.call("hold", timeout=30))
    await asyncio.wait_for(started.wait(), 5)
    pending.cancel()
    with pytest.raises(asyncio.CancelledError):
        await pending
    release.set()
    assert await ref.call("next") == "next"


async def test_pipe_across_link(linked: Tuple[oscloud.Node, oscloud.Node]) -> None:
    a, b = linked
    total = asyncio.get_running_loop().create_future()

    @a.server("count")
    class Count:
        async def handle_pipe(self, port: str, pipe: oscloud.Pipe) -> bool:
            asyncio.ensure_future(self.drain(pipe))
            return True

        async def drain(self, pipe: oscloud.Pipe) -> None:
            n = 0
            async for frame in pipe:
                n += len(frame)
            total.set_result(n)

    ref = await b.lookup("count", wait=5)
    pipe = await ref.open_pipe("in")
    # A frame longer than the peer's pipe window (256 KiB by default) is
    # refused, not written, and the pipe goes on.
    with pytest.raises(oscloud.UsageError, match="longer than the 262144 bytes"):
        await pipe.send(bytes(256 * 1024 + 1))
    sent = 0
    for i in range(200):
        frame = bytes([i % 256]) * (i * 37 % 5000 + 1)
        await pipe.send(frame)
        sent += len(frame)
    pipe.close()
    assert await asyncio.wait_for(total, 10) == sent


async def test_watch_sees_remote_servers_and_link_down(linked: Tuple[oscloud.Node, oscloud.Node]) -> None:
    a, b = linked
    watch = b.watch()

    @a.server("remote-one")
    async def remote_one(_msg: Any) -> None:
        return None

    ev = await next_event(watch, "remote-one", timeout=5)
    assert ev.kind == "added" and ev.entry.node == a.id
    await a.stop()  # drops the link: b sees the server leave
    ev = await next_event(watch, "remote-one")
    assert ev.kind == "removed"
    assert ev.reason is not None


TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


async def test_trace_context_across_link(linked: Tuple[oscloud.Node, oscloud.Node]) -> None:
    """A caller's traceparent reaches a server on the other node; a server
    that calls further passes it on (docs/PROTOCOL.md §4.2)."""
    a, b = linked
    casts: list = []

    @a.server("tp", with_trace=True)
    class Tp:
        async def handle_call(self, msg: Any, traceparent: Any) -> Any:
            return traceparent

        async def handle_cast(self, msg: Any, traceparent: Any) -> None:
            casts.append(traceparent)

    @b.server("hop", with_caller=True, with_trace=True)
    async def hop(msg: Any, caller: Any, traceparent: Any) -> Any:
        tp = await b.lookup("tp", wait=5)
        return [caller is None, await tp.call(msg, traceparent=traceparent)]

    tp = await b.lookup("tp", wait=5)
    assert await tp.call("x", traceparent=TRACEPARENT) == TRACEPARENT
    assert await tp.call("x") is None
    await tp.cast("c", traceparent=TRACEPARENT)
    tp.try_cast("d")
    await tp.call("sync")
    assert casts == [TRACEPARENT, None]
    hop_ref = await a.lookup("hop", wait=5)
    assert await hop_ref.call("y", traceparent=TRACEPARENT) == [False, TRACEPARENT]
    assert await hop_ref.call("y") == [False, None]
    with pytest.raises(oscloud.UsageError):
        await tp.call("x", traceparent="00-not-a-trace")
