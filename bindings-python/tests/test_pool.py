"""The pool (oscloud.Pool): jobs to a group of workers on several nodes,
Python workers and Rust worker processes (oscloud-testnode --pool-worker),
results in order, handler errors returned and not retried, busy."""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator, List, Tuple

import pytest

import oscloud
from conftest import DEADLINE, RustNode, start_rust_node

MASK = 0xFFFFFFFFFFFFFFFF


def pool_work(n: int, rounds: int) -> int:
    """oscloud_tests::pool_work: `rounds` steps of xorshift from n."""
    x = n ^ 0x9E3779B97F4A7C15
    for _ in range(rounds):
        x ^= (x << 13) & MASK
        x ^= x >> 7
        x ^= (x << 17) & MASK
    return x


async def wait_workers(pool: oscloud.Pool, group: str, n: int) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE
    while True:
        groups = (await pool.stats())["groups"]
        if groups.get(group, {}).get("workers", 0) >= n:
            return
        assert loop.time() < deadline, f"workers of {group}: {groups}"
        await asyncio.sleep(0.02)


@pytest.fixture
async def cloud() -> AsyncIterator[Tuple[oscloud.Node, List[oscloud.Node]]]:
    """A hub with a pool, and two worker nodes linked to it over TCP."""
    hub = await oscloud.Node.start(listen=["tcp://127.0.0.1:0"])
    workers = [await oscloud.Node.start(connect=hub.addresses) for _ in range(2)]
    try:
        yield hub, workers
    finally:
        for n in [*workers, hub]:
            await n.stop()


async def test_map_runs_on_python_workers_of_every_node_in_order(
    cloud: Tuple[oscloud.Node, List[oscloud.Node]],
) -> None:
    hub, nodes = cloud
    pool = await oscloud.Pool.start(hub)
    seen: List[str] = []
    for node in nodes:
        tag = node.id[:8]

        @oscloud.pool.worker(node, "square")
        async def square(n: int, tag: str = tag) -> int:
            seen.append(tag)
            await asyncio.sleep(0.001)
            return n * n

    await wait_workers(pool, "square", 2)
    assert await pool.map("square", range(100)) == [n * n for n in range(100)]
    assert len(set(seen)) == 2, "both nodes took jobs"
    stats = await pool.stats()
    assert (stats["submitted"], stats["done"], stats["failed"]) == (100, 100, 0)
    assert stats["pending"] == 0


async def test_a_raising_worker_fails_its_job_without_retry(
    cloud: Tuple[oscloud.Node, List[oscloud.Node]],
) -> None:
    hub, nodes = cloud
    pool = await oscloud.Pool.start(hub, per_worker=1)

    @oscloud.pool.worker(nodes[0], "inv")
    def inverse(x: float) -> float:
        return 1 / x

    await wait_workers(pool, "inv", 1)
    assert await pool.submit("inv", 4) == 0.25
    with pytest.raises(oscloud.JobFailed) as e:
        await pool.map("inv", [1, 0, 2])
    assert "ZeroDivisionError" in e.value.reason
    stats = await pool.stats()
    assert stats["retried"] == 0
    assert stats["failed"] == 1


async def test_a_full_pool_refuses_busy(
    cloud: Tuple[oscloud.Node, List[oscloud.Node]],
) -> None:
    hub, nodes = cloud
    pool = await oscloud.Pool.start(hub, queue_limit=1)

    @oscloud.pool.worker(nodes[0], "slow")
    async def slow(x: Any) -> Any:
        await asyncio.sleep(0.3)
        return x

    await wait_workers(pool, "slow", 1)
    first = asyncio.ensure_future(pool.submit("slow", 1))
    await asyncio.sleep(0.05)
    with pytest.raises(oscloud.PoolBusy):
        await pool.submit("slow", 2)
    assert await first == 1
    assert (await pool.stats())["refused"] == 1


async def test_rust_worker_processes_and_python_workers_share_a_group(
    cloud: Tuple[oscloud.Node, List[oscloud.Node]], rust_nodes: List[RustNode]
) -> None:
    hub, nodes = cloud
    pool = await oscloud.Pool.start(hub, name="cpus")
    for i in range(2):
        rust_nodes.append(
            await start_rust_node(f"pw{i}", connect=hub.addresses, extra=["--pool-worker", "work"])
        )

    @oscloud.pool.worker(nodes[0], "work")
    def work(job: List[int]) -> int:
        n, rounds = job
        return pool_work(n, rounds)

    await wait_workers(pool, "work", 3)
    jobs = [(n, 500) for n in range(60)]
    assert await pool.map("work", jobs) == [pool_work(n, r) for n, r in jobs]
