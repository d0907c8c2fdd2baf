"""``handle_casts``: a class server that defines it gets the casts waiting
in its mailbox as one list per batch (at most 64), in order."""

from __future__ import annotations

import asyncio
from typing import Any, List

import pytest

import oscloud

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


async def test_handle_casts_gets_the_waiting_casts_as_lists_in_order(node: oscloud.Node) -> None:
    gate = asyncio.Event()
    batches: List[List[int]] = []

    @node.server("many")
    class Many:
        async def handle_casts(self, msgs: List[int]) -> None:
            # The first batch holds the server until the gate opens: the
            # casts sent meanwhile wait in its mailbox.
            await gate.wait()
            batches.append(msgs)

        def handle_cast(self, _msg: Any) -> None:
            raise AssertionError("handle_casts is used when both are defined")

        def handle_call(self, _msg: Any) -> List[List[int]]:
            return batches

    ref = await node.lookup("many")
    await ref.cast(0)
    await ref.cast_many(range(1, 150))
    gate.set()
    got = await ref.call("batches")
    assert [n for batch in got for n in batch] == list(range(150))
    assert all(0 < len(batch) <= 64 for batch in got)
    # At least 86 casts waited in the mailbox while the first batch was
    # held: they came in full batches.
    assert 64 in [len(batch) for batch in got[1:]]


async def test_handle_casts_items_carry_caller_and_traceparent(node: oscloud.Node) -> None:
    got: List[Any] = []

    @node.server("extras", with_caller=True, with_trace=True)
    class Extras:
        def handle_casts(self, items: List[Any]) -> None:
            got.extend(items)

        def handle_call(self, _msg: Any, _caller: Any, _traceparent: Any) -> List[Any]:
            return got

    ref = await node.lookup("extras")
    await ref.cast("a", traceparent=TRACEPARENT)
    ref.try_cast(["b"])
    assert await ref.call("got") == [["a", None, TRACEPARENT], [["b"], None, None]]
    assert all(isinstance(item, tuple) for item in got)


async def test_handle_casts_that_raises_fails_the_server(node: oscloud.Node) -> None:
    @node.server("picky", max_restarts=5)
    class Picky:
        def __init__(self) -> None:
            self.n = 0

        def handle_casts(self, msgs: List[int]) -> None:
            if -1 in msgs:
                raise ValueError("no negatives")
            self.n += len(msgs)

        def handle_call(self, _msg: Any) -> int:
            return self.n

    ref = await node.lookup("picky")
    await ref.cast_many([1, 2, 3])
    assert await ref.call("n") == 3
    await ref.cast(-1)
    loop = asyncio.get_running_loop()
    end = loop.time() + 10.0
    while Picky.restarts < 1:
        assert loop.time() < end, "the server did not fail"
        try:
            await ref.call("n")
        except oscloud.RemoteError as e:
            # A call that came while the cast was pending fails with it.
            assert (e.remote_type, e.remote_message) == ("ValueError", "no negatives")
        except oscloud.NotFound:
            pass
        await asyncio.sleep(0.01)
    # Restarted by its supervisor, with fresh state.
    for _ in range(500):
        try:
            assert await ref.call("n") == 0
            break
        except oscloud.NotFound:
            await asyncio.sleep(0.01)
    else:
        raise AssertionError("the server did not come back within 5 s")
    await ref.cast_many([4, 5])
    assert await ref.call("n") == 2
    assert Picky.restarts == 1
