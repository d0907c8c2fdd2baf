"""Node settings from Python: ``Node.start(config=...)``."""

from __future__ import annotations

import asyncio
import signal
from typing import List

import pytest

import oscloud

from conftest import RustNode, next_event, start_rust_node


def test_node_settings_lists_every_key_with_its_kind() -> None:
    settings = {key: kind for key, kind, _help in oscloud.node_settings()}
    assert settings["resume_grace"] == "duration"
    assert settings["pipe_window"] == "bytes"
    assert settings["lossy_send_window"] == "count"
    assert settings["link_budget"] == "bytes"
    assert settings["max_serving"] == "count"
    assert all(help for _key, _kind, help in oscloud.node_settings())


async def test_bad_settings_are_refused_with_the_key() -> None:
    cases = [
        ({"no_such_thing": 1}, "unknown setting"),
        ({"idle_timeout": "soon"}, "not a duration"),
        ({"keepalive": 0}, "above zero"),
        ({"pipe_window": "lots"}, "not a size"),
        ({"keepalive": 3, "idle_timeout": 3}, "not shorter than idle_timeout"),
    ]
    for config, expected in cases:
        with pytest.raises(oscloud.UsageError) as info:
            await oscloud.Node.start(config=config)
        assert expected in str(info.value), str(info.value)
        assert next(iter(config)) in str(info.value)


async def test_idle_timeout_from_config_finds_a_frozen_peer(
    rust_nodes: List[RustNode], tmp_sock_dir: str
) -> None:
    """A peer that stops answering (SIGSTOP) is declared down after the
    configured idle timeout, not the 6 s default."""
    rs = await start_rust_node("frozen", listen=[f"unix://{tmp_sock_dir}/f.sock"])
    rust_nodes.append(rs)
    py = await oscloud.Node.start(
        connect=rs.listening, config={"keepalive": "100ms", "idle_timeout": 0.5}
    )
    try:
        watch = py.watch()
        name = f"upper-{rs.name}"
        await next_event(watch, name, "added")
        loop = asyncio.get_running_loop()
        rs.proc.send_signal(signal.SIGSTOP)
        frozen_at = loop.time()
        try:
            removed = await next_event(watch, name, "removed")
            waited = loop.time() - frozen_at
        finally:
            rs.proc.send_signal(signal.SIGCONT)
        assert removed.reason is not None and removed.reason.startswith("link down"), removed.reason
        # 0.5 s idle timeout (+ scheduling); the default would take 6 s.
        assert waited < 4.0, f"down notice after {waited:.2f} s"
    finally:
        await py.stop()
