"""Fixtures: Python nodes, and Rust peers (the workspace's oscloud-testnode
binary, started as a real process)."""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path
from typing import Any, AsyncIterator, List, Optional, Tuple

import pytest

import oscloud

ROOT = Path(__file__).resolve().parents[2]
DEADLINE = 10.0


def testnode_path() -> Path:
    path = Path(os.environ.get("OSCLOUD_TESTNODE", ROOT / "target" / "debug" / "oscloud-testnode"))
    if not path.exists():
        pytest.fail(f"{path} is missing: build it with `cargo build -p oscloud-tests --bin oscloud-testnode`")
    return path


class RustNode:
    """An oscloud-testnode process driven line by line (see tests/bin/testnode.rs)."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process) -> None:
        self.name = name
        self.proc = proc
        self.listening: List[str] = []
        self.pending: List[str] = []
        self.key: Optional[str] = None

    async def line(self, timeout: float = DEADLINE) -> str:
        assert self.proc.stdout is not None
        raw = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        if not raw:
            raise AssertionError(f"testnode {self.name} exited")
        return raw.decode().rstrip("\n")

    async def expect(self, prefix: str, timeout: float = DEADLINE) -> str:
        """The first line (already read or next) that starts with prefix."""
        for i, seen in enumerate(self.pending):
            if seen.startswith(prefix):
                return self.pending.pop(i)
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while True:
            got = await self.line(max(0.01, end - loop.time()))
            if got.startswith(prefix):
                return got
            self.pending.append(got)

    async def command(self, line: str, answer: Optional[str] = None) -> str:
        """Send a command; return its answer (the next line starting with
        `answer`, or any next line)."""
        assert self.proc.stdin is not None
        self.proc.stdin.write((line + "\n").encode())
        await self.proc.stdin.drain()
        if answer is None:
            return await self.line()
        return await self.expect(answer)

    async def quit(self) -> None:
        if self.proc.returncode is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write(b"quit\n")
                await self.proc.stdin.drain()
                await asyncio.wait_for(self.proc.wait(), 5)
            except (asyncio.TimeoutError, ConnectionError):
                self.proc.kill()
                await self.proc.wait()


async def start_rust_node(
    name: str, listen: List[str] = [], connect: List[str] = [], extra: List[str] = []
) -> RustNode:
    """Start an oscloud-testnode; ``extra``: more arguments (``--key FILE``,
    ``--allow KEY``: a secure node, whose public key is then in ``.key``)."""
    args = ["--name", name, *extra]
    for a in listen:
        args += ["--listen", a]
    for a in connect:
        args += ["--connect", a]
    proc = await asyncio.create_subprocess_exec(
        str(testnode_path()),
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")},
    )
    node = RustNode(name, proc)
    while True:
        line = await node.line()
        if line.startswith("listening "):
            node.listening.append(line.split(" ", 1)[1])
        elif line.startswith("key "):
            node.key = line.split(" ", 1)[1]
        elif line == "ready":
            return node
        else:
            node.pending.append(line)


async def next_event(
    watch: oscloud.Watch, name: str, kind: Optional[str] = None, timeout: float = DEADLINE
) -> oscloud.RegistryEvent:
    """The next registry event about ``name`` (of ``kind``, if given)."""

    async def find() -> oscloud.RegistryEvent:
        async for ev in watch:
            if ev.name == name and (kind is None or ev.kind == kind):
                return ev
        raise AssertionError("watch ended")

    return await asyncio.wait_for(find(), timeout)


@pytest.fixture
def tmp_sock_dir() -> AsyncIterator[str]:
    # Short paths: Unix socket paths are limited to ~100 bytes.
    with tempfile.TemporaryDirectory(prefix="osc-py-") as d:
        yield d  # type: ignore[misc]


@pytest.fixture
async def node() -> AsyncIterator[oscloud.Node]:
    n = await oscloud.Node.start()
    try:
        yield n
    finally:
        await n.stop()


@pytest.fixture(params=["mem", "tcp", "unix", "ws"])
async def linked(request: Any, tmp_sock_dir: str) -> AsyncIterator[Tuple[oscloud.Node, oscloud.Node]]:
    """(a, b): b dialled a, in-process (mem://) or over a real socket (TCP,
    Unix, WebSocket); a serves ``echo``, registered before b dialled. A test that
    wants real sockets only narrows the kinds with ``SOCKETS``."""
    kind = request.param
    if kind == "mem":
        addr = f"mem://py-{os.getpid()}-{id(request)}"
    elif kind == "tcp":
        addr = "tcp://127.0.0.1:0"
    elif kind == "ws":
        addr = "ws://127.0.0.1:0/oscloud"
    else:
        addr = f"unix://{tmp_sock_dir}/a.sock"
    a = await oscloud.Node.start(listen=[addr])

    @a.server("echo")
    async def echo(message: Any) -> Any:
        return message

    b = await oscloud.Node.start(connect=a.addresses)
    try:
        yield a, b
    finally:
        await b.stop()
        await a.stop()


# Runs a test that takes ``linked`` over the real sockets only.
SOCKETS = pytest.mark.parametrize("linked", ["tcp", "unix", "ws"], indirect=True)


@pytest.fixture
async def rust_nodes() -> AsyncIterator[List[RustNode]]:
    """Rust nodes started by a test (append to the list); quit at the end."""
    started: List[RustNode] = []
    try:
        yield started
    finally:
        for r in started:
            await r.quit()
