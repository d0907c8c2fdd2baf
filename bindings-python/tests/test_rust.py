"""Python <-> Rust: a Python node linked to a Rust node (the workspace's
oscloud-testnode process) over TCP and over a Unix socket, each side
dialling in turn. The Rust node runs `upper-<name>` (String -> String),
`sink-<name>` (pipe port "in"; a call with () answers (bytes, fnv1a)) and
can call, pipe to and watch servers by name (tests/bin/testnode.rs)."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any, AsyncIterator, List, Tuple

import pytest

import oscloud
from conftest import RustNode, next_event, start_rust_node

_names = itertools.count()


def fnv1a(data: bytes, h: int = 0xCBF29CE484222325) -> int:
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


@pytest.fixture(params=["tcp-python-listens", "tcp-rust-listens", "unix-python-listens", "unix-rust-listens"])
async def pair(request: Any, tmp_sock_dir: str, rust_nodes: List[RustNode]) -> AsyncIterator[Tuple[oscloud.Node, RustNode]]:
    """A Python node with a Python server `py-upper`, linked to a Rust node."""
    kind = request.param
    name = f"rs{next(_names)}"
    addr = "tcp://127.0.0.1:0" if kind.startswith("tcp") else f"unix://{tmp_sock_dir}/{name}.sock"
    if kind.endswith("python-listens"):
        py = await oscloud.Node.start(listen=[addr])
        rs = await start_rust_node(name, connect=py.addresses)
    else:
        rs = await start_rust_node(name, listen=[addr])
        py = await oscloud.Node.start(connect=rs.listening)
    rust_nodes.append(rs)

    @py.server("py-upper", accepts=["text"])
    async def py_upper(text: str) -> str:
        if text == "fail":
            raise ValueError("will not shout fail")
        return f"{text.upper()} from python"

    try:
        yield py, rs
    finally:
        await py.stop()


async def test_python_calls_rust(pair: Tuple[oscloud.Node, RustNode]) -> None:
    py, rs = pair
    ref = await py.lookup(f"upper-{rs.name}", wait=10)
    assert await ref.call("hello") == f"HELLO from {rs.name}"
    (entry,) = py.servers(f"upper-{rs.name}")
    assert not entry.local
    got = await asyncio.gather(*(ref.call(f"m{i}", timeout=30) for i in range(300)))
    assert got == [f"M{i} from {rs.name}" for i in range(300)]


async def test_rust_calls_python(pair: Tuple[oscloud.Node, RustNode]) -> None:
    py, rs = pair
    assert (await rs.command("wait py-upper", "found py-upper")).split()[2] == py.id[:8]
    assert await rs.command("call py-upper hello", "reply") == "reply HELLO from python"


async def test_python_exception_reaches_rust(pair: Tuple[oscloud.Node, RustNode]) -> None:
    py, rs = pair
    await rs.command("wait py-upper", "found py-upper")
    answer = await rs.command("call py-upper fail", "error")
    assert answer == 'error server "py-upper" stopped: raised ValueError: will not shout fail'
    # The Python server was restarted by its supervisor; Rust finds it again.
    for _ in range(500):
        answer = await rs.command("call py-upper again", "")
        if answer.startswith("reply"):
            break
        await asyncio.sleep(0.01)
    assert answer == "reply AGAIN from python"


async def test_rust_errors_reach_python(pair: Tuple[oscloud.Node, RustNode]) -> None:
    py, rs = pair
    upper = await py.lookup(f"upper-{rs.name}", wait=10)
    sink = await py.lookup(f"sink-{rs.name}", wait=10)
    # The sink's pipe port arrived with its registry entry; upper has none.
    (entry,) = py.servers(f"sink-{rs.name}")
    assert entry.ports == {"in": "in"} and not entry.local
    (entry,) = py.servers(f"upper-{rs.name}")
    assert entry.ports == {}
    # The Rust server cannot decode an int as a String.
    with pytest.raises(oscloud.DecodeError):
        await upper.call(42)
    # Not a pipe port of the Rust server. Over a link, opening is
    # optimistic (PROTOCOL.md: the peer refuses by closing the pipe), so
    # the pipe opens and then reads as closed.
    refused = await upper.open_pipe("in")
    assert await asyncio.wait_for(refused.recv(), 10) is None
    # Rust replies a (u64, u64) tuple: a list in Python.
    assert await sink.call(None) == [0, fnv1a(b"")]
    with pytest.raises(oscloud.NotFound):
        await py.server_ref(f"nothing-{rs.name}").call(1)


async def test_pipe_python_to_rust(pair: Tuple[oscloud.Node, RustNode]) -> None:
    py, rs = pair
    sink = await py.lookup(f"sink-{rs.name}", wait=10)
    pipe = await sink.open_pipe("in")
    h, n = 0xCBF29CE484222325, 0
    for i in range(64):
        frame = bytes((i * 7 + j) % 256 for j in range(1000 + i))
        await pipe.send(frame)
        h, n = fnv1a(frame, h), n + len(frame)
    pipe.close()
    answer = await rs.command(f"sinkwait sink-{rs.name} {n}", "sink")
    assert answer == f"sink {n} {h}"


async def test_pipe_rust_to_python(pair: Tuple[oscloud.Node, RustNode]) -> None:
    py, rs = pair
    done: asyncio.Future = asyncio.get_running_loop().create_future()

    @py.server("py-sink")
    class Sink:
        async def handle_pipe(self, port: str, pipe: oscloud.Pipe) -> bool:
            if port != "in":
                return False
            asyncio.ensure_future(self.drain(pipe))
            return True

        async def drain(self, pipe: oscloud.Pipe) -> None:
            h, n = 0xCBF29CE484222325, 0
            async for frame in pipe:
                h, n = fnv1a(frame, h), n + len(frame)
            done.set_result((n, h))

    await rs.command("wait py-sink", "found py-sink")
    answer = await rs.command("pipe py-sink in 50000", "piped")
    n, h = await asyncio.wait_for(done, 10)
    assert answer == f"piped {n} {h}" and n == 50000


async def test_watch_sees_rust_node_go(pair: Tuple[oscloud.Node, RustNode]) -> None:
    py, rs = pair
    watch = py.watch()
    name = f"upper-{rs.name}"
    added = await next_event(watch, name, "added")
    assert not added.entry.local
    await rs.quit()
    removed = await next_event(watch, name, "removed")
    # The node quitting either withdraws its servers first (they were
    # stopped: "failed: killed") or its link goes down first; both say why.
    assert removed.reason is not None
    assert removed.reason.startswith("link down") or removed.reason == "failed: killed", (
        removed.reason
    )
