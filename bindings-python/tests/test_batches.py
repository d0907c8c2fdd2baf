"""Sending without awaiting (``try_cast``, ``Pipe.try_send``) and in
batches (``cast_many``, ``Pipe.send_many``, ``Pipe.recv_many``): order
kept, a full link or pipe raises at once, a batch waits for room."""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator, List, Tuple

import pytest

import oscloud

PAD = b"x" * 4096
BIG = b"x" * 32 * 1024
DEADLINE = 10.0


class Gate:
    """A server on ``a`` whose casts wait until ``open`` is set; it keeps
    every cast's number, and a call answers them."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.got: List[int] = []


@pytest.fixture
async def gated() -> AsyncIterator[Tuple[Gate, oscloud.ServerRef]]:
    """A gated server on node ``a`` and a reference to it from node ``b``,
    linked over TCP with small queues on both sides (``a`` holds 64 KiB of
    casts for the link, ``b`` queues 64 KiB), so that casts fill the link
    while the gate is shut."""
    a = await oscloud.Node.start(listen=["tcp://127.0.0.1:0"], config={"link_budget": "64KiB"})
    gate = Gate()

    @a.server("gate")
    class Server:
        async def handle_cast(self, msg: Any) -> None:
            await gate.open.wait()
            gate.got.append(msg[0])

        def handle_call(self, _msg: Any) -> List[int]:
            return gate.got

    b = await oscloud.Node.start(connect=a.addresses, config={"max_queued": "64KiB"})
    try:
        yield gate, await b.lookup("gate", wait=DEADLINE)
    finally:
        gate.open.set()
        await b.stop()
        await a.stop()


def fill(ref: oscloud.ServerRef) -> int:
    """``try_cast`` numbered messages until the link is full; how many were
    sent."""
    sent = 0
    while True:
        try:
            ref.try_cast([sent, PAD])
        except oscloud.LinkBusy as busy:
            assert isinstance(busy, oscloud.LinkError)
            assert "busy" in str(busy)
            return sent
        sent += 1
        assert sent < 100_000, "the link never filled"


async def test_try_cast_raises_link_busy_when_full_and_keeps_order(
    gated: Tuple[Gate, oscloud.ServerRef],
) -> None:
    gate, ref = gated
    sent = fill(ref)
    assert sent > 1
    gate.open.set()
    assert await ref.call("got", timeout=DEADLINE) == list(range(sent))


async def test_cast_many_waits_for_room_and_keeps_order(
    gated: Tuple[Gate, oscloud.ServerRef],
) -> None:
    gate, ref = gated
    sent = fill(ref)
    # More than the sockets between the nodes can hold (the driver keeps
    # moving queued casts into them while the gate is shut): the batch
    # waits until the gate opens.
    more = [[n, BIG] for n in range(sent, sent + 2000)]
    batch = asyncio.ensure_future(ref.cast_many(more))
    done, _ = await asyncio.wait({batch}, timeout=0.2)
    assert not done
    gate.open.set()
    await asyncio.wait_for(batch, DEADLINE)
    # And a plain cast after it, without waiting now.
    await ref.cast([sent + 2000, PAD])
    assert await ref.call("got", timeout=DEADLINE) == list(range(sent + 2001))


async def test_cast_many_encodes_every_message_before_sending_any(node: oscloud.Node) -> None:
    got: List[Any] = []

    @node.server("keep")
    class Keep:
        def handle_cast(self, msg: Any) -> None:
            got.append(msg)

        def handle_call(self, _msg: Any) -> List[Any]:
            return got

    ref = await node.lookup("keep")
    with pytest.raises(oscloud.EncodeError):
        await ref.cast_many([1, 2, {3}])
    await ref.cast_many(range(5))
    await ref.cast_many(iter([]))
    assert await ref.call("got") == [0, 1, 2, 3, 4]


async def test_casts_to_a_python_server_arrive_in_order(node: oscloud.Node) -> None:
    @node.server("order")
    class Order:
        def __init__(self) -> None:
            self.got: List[int] = []

        def handle_cast(self, n: int) -> None:
            self.got.append(n)

        async def handle_call(self, _msg: Any) -> List[int]:
            return self.got

    ref = await node.lookup("order")
    for n in range(300):
        if n % 3 == 0:
            await ref.cast(n)
        elif n % 3 == 1:
            ref.try_cast(n)
        else:
            await ref.cast_many([n])
    assert await ref.call("got") == list(range(300))


async def test_pipe_try_send_raises_pipe_full_and_send_many_waits(node: oscloud.Node) -> None:
    release = asyncio.Event()
    got: List[bytes] = []

    @node.server("sink")
    class Sink:
        async def handle_pipe(self, port: str, pipe: oscloud.Pipe) -> bool:
            self.task = asyncio.ensure_future(self.run(pipe))
            return True

        async def run(self, pipe: oscloud.Pipe) -> None:
            await release.wait()
            while frames := await pipe.recv_many(16):
                got.extend(frames)
            await pipe.send(b"%d" % len(got))

    pipe = await (await node.lookup("sink")).open_pipe("in")
    frame = 64 * 1024
    written = 0
    while True:
        try:
            pipe.try_send(written.to_bytes(4, "big") * (frame // 4))
        except oscloud.PipeFull:
            break
        written += 1
        assert written < 10_000, "the pipe never filled"
    assert written >= 1
    more = [n.to_bytes(4, "big") * (frame // 4) for n in range(written, written + 10)]
    batch = asyncio.ensure_future(pipe.send_many(more))
    done, _ = await asyncio.wait({batch}, timeout=0.2)
    assert not done, "the pipe is full: the batch waits"
    release.set()
    await asyncio.wait_for(batch, DEADLINE)
    pipe.close()
    assert await asyncio.wait_for(pipe.recv(), DEADLINE) == b"%d" % (written + 10)
    assert [int.from_bytes(f[:4], "big") for f in got] == list(range(written + 10))
    with pytest.raises(oscloud.PipeClosed):
        pipe.try_send(b"after close")
    with pytest.raises(oscloud.PipeClosed):
        await pipe.send_many([b"after close"])


async def test_pipe_batches_keep_frames_and_order(node: oscloud.Node) -> None:
    @node.server("echo-pipe")
    class EchoPipe:
        async def handle_pipe(self, port: str, pipe: oscloud.Pipe) -> bool:
            self.task = asyncio.ensure_future(self.run(pipe))
            return True

        async def run(self, pipe: oscloud.Pipe) -> None:
            async for frame in pipe:
                await pipe.send(frame)
            pipe.close()

    pipe = await (await node.lookup("echo-pipe")).open_pipe("in")
    frames = [b"frame %d" % i for i in range(2000)] + [b""]
    for i in range(0, len(frames), 100):
        await pipe.send_many(frames[i : i + 100])
    pipe.close()
    got: List[bytes] = []
    while True:
        batch = await asyncio.wait_for(pipe.recv_many(), DEADLINE)
        assert len(batch) <= 64
        if not batch:
            break
        got.extend(batch)
    assert got == frames
    assert await pipe.recv() is None
    assert await pipe.recv_many() == []
