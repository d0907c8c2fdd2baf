"""Python servers and callers on one node (in-process)."""

from __future__ import annotations

import asyncio
from typing import Any, List

import pytest

import oscloud

from conftest import next_event


async def call_when_back(ref: oscloud.ServerRef, msg: Any) -> Any:
    """Call a server that is being restarted: its name is unregistered
    (NotFound) until the new instance is up; wait 5 s at most."""
    for _ in range(500):
        try:
            return await ref.call(msg, timeout=5)
        except oscloud.NotFound:
            await asyncio.sleep(0.01)
    raise AssertionError("the server did not come back within 5 s")


async def test_function_server_handles_calls_and_casts(node: oscloud.Node) -> None:
    seen: List[Any] = []

    @node.server("echo", accepts=["any"], produces=["any"])
    async def echo(msg: Any) -> Any:
        seen.append(msg)
        return {"echo": msg}

    ref = await node.lookup("echo")
    assert ref.name == "echo"
    assert await ref.call([1, "two", b"3", None, 4.5]) == {"echo": [1, "two", b"3", None, 4.5]}
    await ref.cast("one-way")
    # The cast is handled before the next call (one message at a time).
    await ref.call("sync")
    assert seen == [[1, "two", b"3", None, 4.5], "one-way", "sync"]
    (entry,) = node.servers("echo")
    assert entry.local and entry.accepts == ["any"] and entry.produces == ["any"]
    assert entry.node == node.id


async def test_plain_function_server(node: oscloud.Node) -> None:
    @node.server("double")
    def double(n: int) -> int:
        return 2 * n

    assert await (await node.lookup("double")).call(21) == 42


async def test_class_server_keeps_state(node: oscloud.Node) -> None:
    @node.server("counter")
    class Counter:
        def __init__(self) -> None:
            self.total = 0

        async def handle_cast(self, n: int) -> None:
            self.total += n

        async def handle_call(self, _msg: Any) -> int:
            return self.total

    ref = await node.lookup("counter")
    for n in range(10):
        await ref.cast(n)
    # A local server's mailbox takes it at once: nothing to wait for.
    ref.try_cast(100)
    assert await ref.call("get") == 145


async def test_exception_becomes_remote_error_and_server_restarts(node: oscloud.Node) -> None:
    @node.server("fragile", max_restarts=5)
    class Fragile:
        def __init__(self) -> None:
            self.calls = 0

        async def handle_call(self, msg: str) -> int:
            self.calls += 1
            if msg == "boom":
                raise ValueError("cannot handle boom")
            return self.calls

    ref = await node.lookup("fragile")
    assert await ref.call("ok") == 1
    assert await ref.call("ok") == 2
    with pytest.raises(oscloud.RemoteError) as info:
        await ref.call("boom")
    err = info.value
    assert err.server == "fragile"
    assert err.remote_type == "ValueError"
    assert err.remote_message == "cannot handle boom"
    assert isinstance(err, oscloud.ServerStopped)
    # Restarted by its supervisor, with fresh state.
    assert await call_when_back(ref, "ok") == 1
    # The decorator returned the server's handle.
    assert isinstance(Fragile, oscloud.ServerHandle)
    assert Fragile.restarts == 1 and Fragile.running


async def test_custom_exception_type_is_qualified(node: oscloud.Node) -> None:
    class Nope(Exception):
        pass

    @node.server("raiser")
    async def raiser(_msg: Any) -> None:
        raise Nope("no way")

    with pytest.raises(oscloud.RemoteError) as info:
        await (await node.lookup("raiser")).call(1)
    assert info.value.remote_type is not None
    assert info.value.remote_type.endswith("Nope")
    assert info.value.remote_message == "no way"


async def test_server_that_keeps_raising_is_given_up(node: oscloud.Node) -> None:
    @node.server("doomed", max_restarts=2, period=30)
    async def doomed(_msg: Any) -> None:
        raise RuntimeError("always")

    ref = node.server_ref("doomed")
    failures = 0
    for _ in range(3):
        with pytest.raises(oscloud.RemoteError):
            await call_when_back(ref, 1)
        failures += 1
        # Wait (5 s at most) for the restart to be registered, or for the
        # supervisor to give up. The crashed instance's entry may linger a
        # moment, so the restart count is what says the new one is up.
        for _ in range(500):
            if not doomed.running or (doomed.restarts >= failures and node.servers("doomed")):
                break
            await asyncio.sleep(0.01)
    with pytest.raises(oscloud.Error):
        await asyncio.wait_for(doomed.wait(), 5)
    assert not doomed.running
    assert doomed.restarts == 2
    with pytest.raises(oscloud.NotFound):
        await node.lookup("doomed")


async def test_transient_server_stays_down_after_normal_stop(node: oscloud.Node) -> None:
    @node.server("short", restart="transient")
    async def short(_msg: Any) -> str:
        return "ok"

    await short.stop()
    assert not short.running
    with pytest.raises(oscloud.NotFound):
        await node.lookup("short")


async def test_errors_are_typed(node: oscloud.Node) -> None:
    with pytest.raises(oscloud.NotFound) as nf:
        await node.lookup("nobody")
    assert nf.value.server == "nobody"
    assert isinstance(nf.value, LookupError)

    with pytest.raises(oscloud.NotFound):
        await node.lookup("nobody", wait=0.05)

    with pytest.raises(oscloud.NotFound):
        await node.server_ref("nobody").call(1)

    release = asyncio.Event()

    @node.server("slow")
    async def slow(_msg: Any) -> str:
        await release.wait()
        return "late"

    ref = await node.lookup("slow")
    with pytest.raises(oscloud.Timeout) as to:
        await ref.call(1, timeout=0.05)
    assert isinstance(to.value, TimeoutError)
    assert to.value.server == "slow" and to.value.after == pytest.approx(0.05)
    release.set()
    assert await ref.call(2) == "late"

    with pytest.raises(oscloud.EncodeError):
        await ref.call({1, 2})

    with pytest.raises(oscloud.NoSuchPort) as nsp:
        await ref.open_pipe("in")
    assert nsp.value.port == "in"

    with pytest.raises(oscloud.StartFailed):
        node.server("slow")(slow_again)

    with pytest.raises(oscloud.UsageError):
        node.server("x", restart="sometimes")(slow_again)

    with pytest.raises(oscloud.InvalidAddress):
        await node.listen("nonsense")
    with pytest.raises(oscloud.InvalidAddress):
        await node.listen("carrier-pigeon://coop")
    with pytest.raises(oscloud.LinkError):
        await node.connect("unix:///nonexistent/dir/sock")


async def slow_again(_msg: Any) -> None:
    return None


async def test_init_failure_is_start_failed(node: oscloud.Node) -> None:
    with pytest.raises(oscloud.StartFailed) as info:

        @node.server("broken")
        class Broken:
            def __init__(self) -> None:
                raise KeyError("missing config")

    assert "KeyError" in str(info.value)
    with pytest.raises(oscloud.NotFound):
        await node.lookup("broken")


async def test_cancelled_call_leaves_node_healthy(node: oscloud.Node) -> None:
    started = asyncio.Event()
    release = asyncio.Event()

    @node.server("blocking")
    async def blocking(msg: str) -> str:
        if msg == "hold":
            started.set()
            await release.wait()
        return msg

    ref = await node.lookup("blocking")
    pending = asyncio.create_task(ref.call("hold", timeout=30))
    await asyncio.wait_for(started.wait(), 5)
    pending.cancel()
    with pytest.raises(asyncio.CancelledError):
        await pending
    release.set()
    # The server finished the abandoned call and takes new ones.
    assert await ref.call("after") == "after"
    # Cancelling many calls at once leaves no trace either.
    tasks = [asyncio.create_task(ref.call(i, timeout=30)) for i in range(50)]
    await asyncio.sleep(0)
    for t in tasks[::2]:
        t.cancel()
    done = await asyncio.gather(*tasks, return_exceptions=True)
    for i, r in enumerate(done):
        assert isinstance(r, asyncio.CancelledError) if i % 2 == 0 else r == i
    assert await ref.call("still fine") == "still fine"


async def test_many_concurrent_calls(node: oscloud.Node) -> None:
    @node.server("square")
    async def square(n: int) -> int:
        await asyncio.sleep(0)
        return n * n

    ref = await node.lookup("square")
    n = 2000
    results = await asyncio.gather(*(ref.call(i, timeout=30) for i in range(n)))
    assert results == [i * i for i in range(n)]


async def test_async_handler_runs_in_a_task_of_the_nodes_loop(node: oscloud.Node) -> None:
    loop = asyncio.get_running_loop()
    later = loop.create_future()

    @node.server("tasked")
    async def tasked(msg: str) -> Any:
        # Run by the node's loop, in a task of its own: what asyncio.timeout
        # and task groups need.
        task = asyncio.current_task()
        assert task is not None and asyncio.get_running_loop() is loop
        if msg == "timeout":
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.01):
                    await loop.create_future()
            return "timed out"
        if msg == "wait":
            # Suspends: the reply comes from a later step of the task.
            return await later
        if msg == "unencodable":
            await asyncio.sleep(0)
            return {1, 2}
        return task.get_name() != ""

    ref = await node.lookup("tasked")
    assert await ref.call("plain") is True
    if hasattr(asyncio, "timeout"):  # Python 3.11+
        assert await ref.call("timeout") == "timed out"
    waiting = asyncio.create_task(ref.call("wait"))
    loop.call_soon(later.set_result, ["from", "later"])
    assert await waiting == ["from", "later"]
    with pytest.raises(oscloud.RemoteError, match="EncodeError"):
        await ref.call("unencodable")


async def test_async_cast_handlers_that_await_keep_the_order(node: oscloud.Node) -> None:
    @node.server("ordered")
    class Ordered:
        def __init__(self) -> None:
            self.seen: List[int] = []

        async def handle_cast(self, n: int) -> None:
            if n % 3 == 0:
                await asyncio.sleep(0)
            self.seen.append(n)

        def handle_call(self, _msg: Any) -> List[int]:
            return self.seen

    ref = await node.lookup("ordered")
    for n in range(300):
        await ref.cast(n)
    assert await ref.call("seen") == list(range(300))


async def test_group_round_robin(node: oscloud.Node) -> None:
    for i in range(3):
        node.server("pool", group=True)(make_member(i))
    ref = node.server_ref("pool")
    got = {await ref.call(None) for _ in range(6)}
    assert got == {0, 1, 2}


def make_member(i: int) -> Any:
    async def member(_msg: Any) -> int:
        return i

    return member


async def test_pipes_python_to_python(node: oscloud.Node) -> None:
    @node.server("shout", ports={"in": "both"})
    class Shout:
        async def handle_pipe(self, port: str, pipe: oscloud.Pipe) -> bool:
            if port != "in":
                return False
            self.task = asyncio.ensure_future(self.run(pipe))
            return True

        async def run(self, pipe: oscloud.Pipe) -> None:
            async for frame in pipe:
                await pipe.send(frame.upper())
            pipe.close()

    (entry,) = node.servers("shout")
    assert entry.ports == {"in": "both"}
    with pytest.raises(oscloud.UsageError):
        node.server("bad-port", ports={"in": "sideways"})(Shout)
    ref = await node.lookup("shout")
    with pytest.raises(oscloud.NoSuchPort):
        await ref.open_pipe("out")
    pipe = await ref.open_pipe("in")
    frames = [b"frame %d" % i for i in range(100)]

    async def write() -> None:
        for f in frames:
            await pipe.send(f)
        pipe.close()

    writer = asyncio.create_task(write())
    got = [f async for f in pipe]
    await writer
    assert got == [f.upper() for f in frames]
    assert await pipe.recv() is None
    with pytest.raises(oscloud.PipeClosed):
        await pipe.send(b"after close")


async def test_pipe_drained_waits_until_the_reader_took_every_frame(
    node: oscloud.Node,
) -> None:
    release = asyncio.Event()
    got: list[bytes] = []

    @node.server("slow-reader")
    class SlowReader:
        async def handle_pipe(self, port: str, pipe: oscloud.Pipe) -> bool:
            self.task = asyncio.ensure_future(self.run(pipe))
            return True

        async def run(self, pipe: oscloud.Pipe) -> None:
            await release.wait()
            async for frame in pipe:
                got.append(frame)
            await pipe.send(b"%d" % len(got))

    ref = await node.lookup("slow-reader")
    pipe = await ref.open_pipe("in")
    frames = [b"frame %d" % i for i in range(3)]
    for f in frames:
        await pipe.send(f)
    drained = asyncio.ensure_future(pipe.drained())
    # Nobody reads yet: the frames wait, and so does `drained`.
    done, _ = await asyncio.wait({drained}, timeout=0.2)
    assert not done
    release.set()
    await asyncio.wait_for(drained, 5)
    pipe.close()
    with pytest.raises(oscloud.PipeClosed):
        await pipe.drained()
    # Every frame reached the server, which answers with how many.
    assert await asyncio.wait_for(pipe.recv(), 5) == b"3"
    assert got == frames


async def test_watch_reports_added_and_removed(node: oscloud.Node) -> None:
    watch = node.watch()

    @node.server("watched", max_restarts=3)
    async def watched(msg: str) -> str:
        if msg == "die":
            raise ValueError("asked to")
        return msg

    ev = await next_event(watch, "watched", timeout=5)
    assert ev.kind == "added" and ev.reason is None and ev.entry.local
    with pytest.raises(oscloud.RemoteError):
        await (await node.lookup("watched")).call("die")
    ev = await next_event(watch, "watched", timeout=5)
    assert ev.kind == "removed"
    assert ev.reason == "failed: raised ValueError: asked to"
    ev = await next_event(watch, "watched", timeout=5)
    assert ev.kind == "added"  # restarted
    assert await watch.next(timeout=0.01) is None
