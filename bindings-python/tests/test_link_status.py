"""What a node shows about its links and routes: Python nodes linked over
real sockets (TCP and Unix), their links with the peer and counters that
move, routes to a far server through a middle node (and the best of two),
closing a link from either side, and a route through a Rust node (the
workspace's oscloud-testnode process). Waits poll with a deadline."""

from __future__ import annotations

import asyncio
from typing import Callable, List, Tuple

import pytest

import oscloud
from conftest import DEADLINE, SOCKETS, RustNode, next_event, start_rust_node

STATS = {
    "frames_sent",
    "frames_received",
    "bytes_sent",
    "bytes_received",
    "payload_bytes_sent",
    "payload_bytes_received",
    "retransmissions",
    "fast_retransmits",
    "timeouts",
    "duplicates",
    "out_of_order",
    "dropped",
    "crc_failures",
    "framing_failures",
    "decode_failures",
    "auth_failures",
    "replays",
    "detaches",
    "resumes",
    "rtt_samples",
    "srtt_us",
    "rto_us",
}


async def until(what: str, cond: Callable[[], bool], timeout: float = DEADLINE) -> None:
    """Poll ``cond`` every 5 ms; fail after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        if loop.time() > end:
            raise AssertionError(f"timed out waiting until {what}")
        await asyncio.sleep(0.005)


def assert_up(*nodes: oscloud.Node) -> None:
    """Each node has one link, up, with its peer known: both sides mark a
    link up before they share or learn servers over it, so this holds as
    soon as either side sees the other's servers."""
    for n in nodes:
        links = n.links()
        assert len(links) == 1 and links[0].connected and links[0].peer is not None, links


@SOCKETS
async def test_links_show_the_peer_and_bytes_moving(linked: Tuple[oscloud.Node, oscloud.Node]) -> None:
    a, b = linked
    ref = await b.lookup("echo", wait=DEADLINE)
    assert_up(a, b)
    (bl,) = b.links()
    (al,) = a.links()
    assert bl.peer == a.id and al.peer == b.id
    assert bl.dialed == a.addresses[0] and al.dialed is None
    assert bl.reconnects == 0
    assert set(bl.stats) == STATS
    assert bl.stats["frames_sent"] > 0 and bl.stats["bytes_received"] > 0
    assert bl.stats["crc_failures"] == 0 and bl.stats["decode_failures"] == 0
    # TCP and Unix sockets are reliable: nothing is timed or retransmitted.
    assert bl.stats["rtt_samples"] == 0 and bl.stats["rto_us"] == 0

    payload = "x" * 1000
    assert await ref.call(payload) == payload

    def moved(now: oscloud.Link, before: oscloud.Link) -> bool:
        s, t = now.stats, before.stats
        return (
            s["bytes_sent"] >= t["bytes_sent"] + 1000
            and s["bytes_received"] >= t["bytes_received"] + 1000
            and s["payload_bytes_sent"] >= t["payload_bytes_sent"] + 1000
            and s["payload_bytes_received"] >= t["payload_bytes_received"] + 1000
            and s["frames_sent"] > t["frames_sent"]
        )

    # Both sides count the call by the time it returns.
    assert moved(b.links()[0], bl), b.links()
    assert moved(a.links()[0], al), a.links()
    assert b.links()[0].id == bl.id

    # b's one route: a's server, one hop, over b's link, in use.
    (route,) = b.routes()
    assert (route.name, route.node, route.path) == ("echo", a.id, [a.id])
    assert (route.cost, route.link, route.best) == (1, bl.id, True)
    assert "echo" in repr(route) and "best" in repr(route)
    assert a.routes() == []


@SOCKETS
async def test_links_show_round_trips_and_queues(
    linked: Tuple[oscloud.Node, oscloud.Node],
) -> None:
    a, b = linked
    ref = await b.lookup("echo", wait=DEADLINE)
    assert await ref.call("x" * 1000) == "x" * 1000
    # Each side probes its link's round trip as soon as it is up.
    await until("both sides measured the round trip", lambda: all(n.links()[0].rtt_us > 0 for n in (a, b)))
    for n in (a, b):
        (link,) = n.links()
        assert link.stats["frames_sent"] > 0 and link.stats["frames_received"] > 0
        # A probe's round trip on a local socket: at least 1 µs, under 5 s.
        assert 0 < link.rtt_us < 5_000_000, link.rtt_us
        h = link.probe_rtt
        assert isinstance(h, oscloud.RttHistogram)
        assert h.count >= 1 and sum(h.buckets) == h.count, h.buckets
        assert len(h.buckets) == len(h.bounds_ns) + 1
        assert h.bounds_ns == sorted(h.bounds_ns) and h.bounds_ns[0] == 25_000
        assert h.sum_us > 0 and h.buckets[-1] == 0
        # Reliable streams time nothing themselves.
        assert link.session_rtt.count == 0 and link.session_rtt.sum_us == 0
        # No pipes: nothing waited for credit.
        assert link.credit_stalls == 0
        assert link.send_queue_bytes >= 0
        assert link.closed is None
    await until("nothing waits to be sent", lambda: b.links()[0].send_queue_bytes == 0)


@SOCKETS
async def test_close_link_drops_it(linked: Tuple[oscloud.Node, oscloud.Node]) -> None:
    a, b = linked
    await b.lookup("echo", wait=DEADLINE)
    watch = b.watch()
    (bl,) = b.links()
    assert not b.close_link(bl.id + 1000)

    # From the dialling side: for good.
    assert b.close_link(bl.id)
    ev = await next_event(watch, "echo", kind="removed")
    assert ev.entry.node == a.id
    await until("both ends dropped the link", lambda: b.links() == [] and a.links() == [])
    assert b.peers() == [] and a.peers() == []
    assert b.routes() == []
    assert not b.close_link(bl.id)
    with pytest.raises(oscloud.NotFound):
        await b.lookup("echo")


@SOCKETS
async def test_close_link_from_the_accepting_side_is_dialled_again(
    linked: Tuple[oscloud.Node, oscloud.Node],
) -> None:
    a, b = linked
    await b.lookup("echo", wait=DEADLINE)
    assert_up(a, b)
    (al,) = a.links()
    (bl,) = b.links()
    assert a.close_link(al.id)
    # b dials again: a accepts a new link (a new id), b keeps its link's id
    # and counts the reconnection.

    def back() -> bool:
        links_a, links_b = a.links(), b.links()
        return (
            len(links_a) == 1
            and links_a[0].id != al.id
            and links_a[0].connected
            and len(links_b) == 1
            and links_b[0].connected
            and links_b[0].reconnects >= 1
        )

    await until("b dialled a again", back)
    assert b.links()[0].id == bl.id
    ref = await b.lookup("echo", wait=DEADLINE)
    assert await ref.call("again") == "again"


async def test_routes_through_a_middle_node(tmp_sock_dir: str) -> None:
    """a -- b over a Unix socket, b -- c over TCP: a sees c's server through
    b (cost 2); once a also links to c directly, the direct route (cost 1)
    is the best and the one through b stays listed; closing the direct
    link falls back to the route through b."""
    nodes: List[oscloud.Node] = []
    try:
        c = await oscloud.Node.start(listen=["tcp://127.0.0.1:0"])
        nodes.append(c)

        @c.server("far")
        async def far(message: str) -> str:
            return f"far got {message}"

        b = await oscloud.Node.start(listen=[f"unix://{tmp_sock_dir}/b.sock"], connect=c.addresses)
        nodes.append(b)

        @b.server("mid")
        async def mid(message: str) -> str:
            return message

        a = await oscloud.Node.start(connect=b.addresses)
        nodes.append(a)
        ref = await a.lookup("far", wait=DEADLINE)
        await a.lookup("mid", wait=DEADLINE)
        assert await ref.call("hi") == "far got hi"

        (to_b,) = a.links()
        assert to_b.peer == b.id
        routes = a.routes()
        assert [(r.name, r.node, r.path, r.cost, r.link, r.best) for r in routes] == [
            ("far", c.id, [c.id, b.id], 2, to_b.id, True),
            ("mid", b.id, [b.id], 1, to_b.id, True),
        ]

        # A direct link to c: the better route, the one through b kept.
        await a.connect(c.addresses[0])
        (to_c,) = [l for l in a.links() if l.peer == c.id]

        def far_routes() -> List[Tuple[List[str], int, int, bool]]:
            return [(r.path, r.cost, r.link, r.best) for r in a.routes() if r.name == "far"]

        want = [([c.id], 1, to_c.id, True), ([c.id, b.id], 2, to_b.id, False)]
        await until("a has both routes to far", lambda: far_routes() == want)
        assert await ref.call("direct") == "far got direct"

        # Close the direct link: far is reached through b again.
        assert a.close_link(to_c.id)
        want = [([c.id, b.id], 2, to_b.id, True)]
        await until("a routes to far through b again", lambda: far_routes() == want)
        await until("the direct link is gone", lambda: [l.id for l in a.links()] == [to_b.id])
        assert await ref.call("via b") == "far got via b"
    finally:
        for n in reversed(nodes):
            await n.stop()


async def test_routes_through_a_rust_node(tmp_sock_dir: str, rust_nodes: List[RustNode]) -> None:
    """Python a -- Rust testnode over a Unix socket -- Python c over TCP: a
    reaches c's server through the Rust node, and both sides agree on the
    route."""
    nodes: List[oscloud.Node] = []
    try:
        c = await oscloud.Node.start(listen=["tcp://127.0.0.1:0"])
        nodes.append(c)

        @c.server("py-far")
        async def py_far(message: str) -> str:
            return f"python far got {message}"

        rs = await start_rust_node("mid", listen=[f"unix://{tmp_sock_dir}/mid.sock"], connect=c.addresses)
        rust_nodes.append(rs)
        a = await oscloud.Node.start(connect=rs.listening)
        nodes.append(a)
        ref = await a.lookup("py-far", wait=DEADLINE)
        assert await ref.call("hi") == "python far got hi"
        await a.lookup("upper-mid", wait=DEADLINE)

        (link,) = a.links()
        assert link.peer is not None
        mid = link.peer
        got = {r.name: (r.node, r.path, r.cost, r.link, r.best) for r in a.routes()}
        assert got["py-far"] == (c.id, [c.id, mid], 2, link.id, True)
        assert got["upper-mid"] == (mid, [mid], 1, link.id, True)
        # The Rust node's own view: c's server one hop away.
        assert await rs.command("route py-far", "route py-far") == "route py-far hops 1 cost 1"
        # The counters of a's link to the Rust node show the call.
        s = a.links()[0].stats
        assert s["payload_bytes_sent"] > 0 and s["payload_bytes_received"] > 0, s
    finally:
        for n in reversed(nodes):
            await n.stop()
