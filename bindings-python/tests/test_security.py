"""Rust servers hosted in the Python process, secure (encrypted,
authenticated) nodes, link status, and the caller's identity in Python
servers."""

from __future__ import annotations

import asyncio
import os
import stat
from typing import Any, List, Optional

import pytest

import oscloud
from oscloud import _native
from conftest import RustNode, start_rust_node


# ----- a Rust server in this process -----


async def test_python_and_rust_servers_call_each_other_in_process(node: oscloud.Node) -> None:
    """Python caller -> Rust server and Rust server -> Python server, on
    one node, in one process."""
    _native._rust_echo(node._native, "rs-echo")

    @node.server("py-upper")
    async def py_upper(text: str) -> str:
        return f"{text.upper()} from python"

    rs = await node.lookup("rs-echo")
    (entry,) = node.servers("rs-echo")
    assert entry.local
    # Python calls Rust.
    assert await rs.call(["upper", "hello"]) == "HELLO from rust"
    # Rust calls Python (the Rust server looks it up and calls it).
    assert await rs.call(["call", "py-upper", "hi"]) == "rust got: HI from python"
    # A local caller has no caller identity.
    assert await rs.call(["whoami"]) == "local"
    # A Rust failure reaches Python as a typed exception, and the Rust
    # server's supervisor restarts it.
    with pytest.raises(oscloud.ServerStopped) as info:
        await rs.call(["fail", "rust says no"])
    assert "rust says no" in str(info.value)
    for _ in range(500):
        try:
            assert await rs.call(["upper", "again"]) == "AGAIN from rust"
            break
        except (oscloud.ServerStopped, oscloud.NotFound):
            await asyncio.sleep(0.01)
    else:
        pytest.fail("the Rust server was not restarted")
    # A Python exception reaches the Rust server, which reports it.
    @node.server("py-fail")
    async def py_fail(text: str) -> str:
        raise ValueError(text)

    with pytest.raises(oscloud.ServerStopped) as info2:
        await rs.call(["call", "py-fail", "boom"])
    assert "ValueError: boom" in str(info2.value)
    # Many concurrent calls from asyncio tasks.
    got = await asyncio.gather(*(rs.call(["upper", f"m{i}"]) for i in range(200)))
    assert got == [f"M{i} from rust" for i in range(200)]


async def test_rust_server_on_another_node_of_this_process() -> None:
    """Two Python nodes linked in-process (mem://), the Rust server on one,
    the Python server on the other: calls both ways over the link."""
    a = await oscloud.Node.start(listen=[f"mem://rs-{os.getpid()}-{id(object())}"])
    b = await oscloud.Node.start(connect=a.addresses)
    try:
        _native._rust_echo(a._native, "rs-far")

        @b.server("py-near")
        async def py_near(text: str) -> str:
            return f"{text} (python on b)"

        rs = await b.lookup("rs-far", wait=5)
        assert await rs.call(["upper", "x"]) == "X from rust"
        await a.lookup("py-near", wait=5)
        assert await rs.call(["call", "py-near", "y"]) == "rust got: y (python on b)"
        assert (await rs.call(["whoami"])).startswith(f"{b.id} key none")
    finally:
        await b.stop()
        await a.stop()


# ----- secure nodes -----


def test_keygen_writes_a_private_key_file(tmp_path: Any) -> None:
    path = str(tmp_path / "node.key")
    public = oscloud.keygen(path)
    assert len(public) == 64 and int(public, 16) >= 0
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert oscloud.keygen(path) == public, "an existing key is read, not replaced"


async def secure_pair(tmp_path: Any, addr: str = "tcp://127.0.0.1:0") -> "tuple[oscloud.Node, oscloud.Node]":
    ka, kb = str(tmp_path / "a.key"), str(tmp_path / "b.key")
    pa, pb = oscloud.keygen(ka), oscloud.keygen(kb)
    a = await oscloud.Node.start(listen=[addr], key=ka, allow=[pb])
    b = await oscloud.Node.start(connect=a.addresses, key=kb, allow=[pa])
    return a, b


async def test_encrypted_python_link_links_and_status(tmp_path: Any) -> None:
    a, b = await secure_pair(tmp_path)
    try:
        assert a.public_key is not None and b.public_key is not None
        assert a.allowed_keys() == [b.public_key]
        seen: List[Optional[oscloud.Caller]] = []

        @a.server("who", with_caller=True)
        async def who(text: str, caller: Optional[oscloud.Caller]) -> str:
            seen.append(caller)
            return text

        ref = await b.lookup("who", wait=5)
        assert await ref.call("hi") == "hi"
        (caller,) = seen
        assert caller is not None
        assert caller.node == b.id and caller.key == b.public_key
        # A local caller has none.
        assert await (await a.lookup("who")).call("local") == "local"
        assert seen[1] is None
        (link,) = b.links()
        assert link.connected and link.peer == a.id
        assert link.dialed == a.addresses[0]
        assert link.stats["frames_sent"] > 0 and link.stats["auth_failures"] == 0
        assert link.stats["payload_bytes_sent"] > 0
        assert "tcp" in repr(link) or "127.0.0.1" in repr(link)
    finally:
        await b.stop()
        await a.stop()


async def test_unknown_key_is_refused_and_revoke_drops_the_link(tmp_path: Any) -> None:
    a, b = await secure_pair(tmp_path)
    stranger_key = str(tmp_path / "c.key")
    oscloud.keygen(stranger_key)
    try:
        # An unknown key is refused.
        with pytest.raises(oscloud.LinkError, match="allow-list"):
            await oscloud.Node.start(connect=a.addresses, key=stranger_key, allow=[a.public_key or ""])
        # Revoking b drops its live link.
        assert b.public_key is not None
        a.revoke(b.public_key)
        for _ in range(500):
            if not any(l.connected for l in b.links()):
                break
            await asyncio.sleep(0.01)
        else:
            pytest.fail("b's link was not dropped")
        assert a.allowed_keys() == []
        # b's link, dialled again and refused, shows why a closed it.
        for _ in range(500):
            closes = [l.closed for l in b.links() if l.closed is not None]
            if closes:
                break
            await asyncio.sleep(0.01)
        else:
            pytest.fail(f"b's link shows no close: {b.links()}")
        (close,) = closes
        assert isinstance(close, oscloud.LinkClose)
        assert (close.name, close.code, close.remote) == ("Unauthorized", 10, True), close
        assert "allow-list" in close.message, close
        # Allowing it again: b's own redialling links it again.
        a.allow(b.public_key)
        for _ in range(1000):
            if any(l.connected for l in b.links()):
                break
            await asyncio.sleep(0.01)
        else:
            pytest.fail("b did not link again")
    finally:
        await b.stop()
        await a.stop()


async def test_allow_file_and_psk(tmp_path: Any) -> None:
    ka, kb = str(tmp_path / "a.key"), str(tmp_path / "b.key")
    pa, pb = oscloud.keygen(ka), oscloud.keygen(kb)
    allow = tmp_path / "allow"
    allow.write_text(f"# peers\n{pb} b\n")
    psk = bytes(range(32))
    a = await oscloud.Node.start(listen=["tcp://127.0.0.1:0"], key=ka, allow_file=str(allow), psk=psk)
    try:
        with pytest.raises(oscloud.LinkError, match="pre-shared key"):
            await oscloud.Node.start(connect=a.addresses, key=kb, allow=[pa], psk=bytes(32))
        b = await oscloud.Node.start(connect=a.addresses, key=kb, allow=[pa], psk=psk)
        assert b.peers() == [a.id]
        allow.write_text("# nobody\n")
        a.reload_allow_list()
        for _ in range(500):
            if not b.peers():
                break
            await asyncio.sleep(0.01)
        else:
            pytest.fail("b's link was not dropped after the reload")
        await b.stop()
    finally:
        await a.stop()


def test_security_arguments_are_checked() -> None:
    async def go() -> None:
        with pytest.raises(oscloud.UsageError):
            await oscloud.Node.start(allow=["00" * 32])
        node = await oscloud.Node.start()
        try:
            assert node.public_key is None
            with pytest.raises(oscloud.UsageError):
                node.allow("00" * 32)
            assert node.links() == []
        finally:
            await node.stop()

    asyncio.run(go())


async def test_bad_psk_length_and_bad_key_text(tmp_path: Any) -> None:
    key = str(tmp_path / "k.key")
    oscloud.keygen(key)
    with pytest.raises(oscloud.UsageError, match="32 bytes"):
        await oscloud.Node.start(key=key, psk=b"short")
    with pytest.raises(oscloud.Error):
        await oscloud.Node.start(key=key, allow=["not a key"])


# ----- encrypted Python <-> Rust (another process) -----


async def test_encrypted_link_python_and_rust(tmp_path: Any, rust_nodes: List[RustNode]) -> None:
    kp = str(tmp_path / "py.key")
    pp = oscloud.keygen(kp)
    # The Rust node makes its key and prints it; start it knowing ours.
    rs = await start_rust_node(
        "sec", listen=["tcp://127.0.0.1:0"], extra=["--key", str(tmp_path / "rs.key"), "--allow", pp]
    )
    rust_nodes.append(rs)
    assert rs.key is not None
    py = await oscloud.Node.start(connect=rs.listening, key=kp, allow=[rs.key])
    try:
        seen: List[Optional[oscloud.Caller]] = []

        @py.server("py-who", with_caller=True)
        async def py_who(text: str, caller: Optional[oscloud.Caller]) -> str:
            seen.append(caller)
            return text.upper()

        ref = await py.lookup("upper-sec", wait=10)
        assert await ref.call("secret") == "SECRET from sec"
        # Rust calls Python over the encrypted link; Python sees its key.
        await rs.command("wait py-who", "found py-who")
        assert await rs.command("call py-who psst", "reply") == "reply PSST"
        (caller,) = seen
        assert caller is not None and caller.key == rs.key
        (link,) = py.links()
        assert link.connected and link.stats["auth_failures"] == 0
        # A Python node with an unknown key is refused by the Rust node.
        stranger = str(tmp_path / "stranger.key")
        oscloud.keygen(stranger)
        with pytest.raises(oscloud.LinkError, match="allow-list"):
            await oscloud.Node.start(connect=rs.listening, key=stranger, allow=[rs.key])
        # A plaintext Python node is refused too.
        with pytest.raises(oscloud.LinkError):
            await oscloud.Node.start(connect=rs.listening)
    finally:
        await py.stop()
