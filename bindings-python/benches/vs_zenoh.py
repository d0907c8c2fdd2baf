"""oscloud from Python against zenoh-python (eclipse-zenoh 1.10.2), two
Python processes on the loopback, interleaved rounds.

Usage (the release wheel or ``maturin develop --release`` installed, and
``eclipse-zenoh==1.10.2``; ``scripts/bench-python.sh`` does both)::

    python bindings-python/benches/vs_zenoh.py [--rounds 5] [--quick] [--calls-only]

The bench starts itself again as two server processes (``--serve oscloud``
and ``--serve zenoh``), each listening on TCP on 127.0.0.1 (zenoh in peer
mode, explicit listen/connect endpoints, no scouting). In each round both
sides of a measure run one after the other, the order alternating (A B,
B A, ...); each round's oscloud figure is divided by the same round's
baseline; the table gives the median ratio and its min–max. CPU time is
user + system of both processes (each one's own ``getrusage``).

Measures:

- **one-way casts/s, 64 B**, to a Python server that counts them (a final
  call is the barrier), awaited one by one, 64 per ``asyncio.gather``,
  ``try_cast`` not awaited (a full link: one awaited ``cast``), and
  ``cast_many`` of 64; then awaited one by one and ``cast_many`` of 64 to
  a server whose ``handle_casts`` gets them as lists;
  against zenoh ``put`` of 64 B (congestion control ``BLOCK``: nothing
  dropped) to a subscriber that counts them, timed until a ``get`` to the
  subscriber's process says it counted every one;
- **pipe frames/s, 64 B**, from Python to a Python server reading the pipe
  (``async for``, or ``recv_many``), awaited one by one and ``send_many``
  of 64, against the same zenoh ``put``;
- **call round trip, 64 B**, to a Python ``def`` server, against ``get`` to
  a queryable whose callback answers;
- **``async def`` server against ``def``**: call round trip, both oscloud.

It is a bench, not a test: it asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from typing import Any, Awaitable, Callable, List, Optional, Tuple

MSG = "x" * 62  # 64 bytes of MessagePack
PAYLOAD = bytes(64)


def cpu_now() -> float:
    """This process's CPU time so far (user + system), in seconds."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def answer_cpu_until_eof(stop: Callable[[], None]) -> None:
    """Answer each ``cpu`` line on stdin with this process's CPU time; call
    ``stop`` when stdin closes."""
    for _ in sys.stdin:
        print(cpu_now(), flush=True)
    stop()


# ------------------------------------------------------------------ servers


async def serve_oscloud() -> None:
    import oscloud

    node = await oscloud.Node.start(listen=["tcp://127.0.0.1:0"])

    @node.server("count")
    class Count:
        def __init__(self) -> None:
            self.n = 0

        def handle_cast(self, _msg: Any) -> None:
            self.n += 1

        def handle_call(self, _msg: Any) -> int:
            return self.n

    @node.server("count_many")
    class CountMany:
        def __init__(self) -> None:
            self.n = 0

        def handle_casts(self, msgs: List[Any]) -> None:
            self.n += len(msgs)

        def handle_call(self, _msg: Any) -> int:
            return self.n

    frames = {"n": 0, "want": -1}
    reached = asyncio.Event()

    def counted(k: int) -> None:
        frames["n"] += k
        if frames["n"] >= frames["want"] >= 0:
            reached.set()

    @node.server("sink", ports={"in": "in", "in_many": "in"})
    class Sink:
        async def handle_pipe(self, port: str, pipe: oscloud.Pipe) -> bool:
            drain = self.drain if port == "in" else self.drain_many
            self.task = asyncio.ensure_future(drain(pipe))
            return True

        async def drain(self, pipe: oscloud.Pipe) -> None:
            async for _frame in pipe:
                counted(1)

        async def drain_many(self, pipe: oscloud.Pipe) -> None:
            while batch := await pipe.recv_many():
                counted(len(batch))

        async def handle_call(self, want: int) -> int:
            # `until N`: answered once the pipes brought N frames in all.
            frames["want"] = want
            if frames["n"] < want:
                reached.clear()
                await reached.wait()
            frames["want"] = -1
            return frames["n"]

    @node.server("echo")
    def echo(msg: Any) -> Any:
        return msg

    @node.server("aecho")
    async def aecho(msg: Any) -> Any:
        return msg

    loop = asyncio.get_running_loop()
    done = loop.create_future()
    print(node.addresses[0], flush=True)
    threading.Thread(
        target=answer_cpu_until_eof,
        args=(lambda: loop.call_soon_threadsafe(done.set_result, None),),
        daemon=True,
    ).start()
    await done
    await node.stop()


def serve_zenoh() -> None:
    import zenoh

    port = free_port()
    endpoint = f"tcp/127.0.0.1:{port}"
    session = zenoh.open(zenoh_config(listen=[endpoint], connect=[]))
    lock = threading.Lock()
    state = {"n": 0, "want": -1}
    reached = threading.Event()

    def on_sample(_sample: Any) -> None:
        with lock:
            state["n"] += 1
            if state["n"] >= state["want"] >= 0:
                reached.set()

    def on_echo(query: Any) -> None:
        query.reply("bench/echo", query.payload if query.payload is not None else b"")

    def on_until(query: Any) -> None:
        want = int(query.payload.to_bytes().decode())

        def wait_and_reply() -> None:
            with lock:
                state["want"] = want
                if state["n"] >= want:
                    reached.set()
            reached.wait()
            with lock:
                reached.clear()
                state["want"] = -1
            query.reply("bench/until", b"ok")

        threading.Thread(target=wait_and_reply, daemon=True).start()

    keep = [
        session.declare_subscriber("bench/data", on_sample),
        session.declare_queryable("bench/echo", on_echo),
        session.declare_queryable("bench/until", on_until),
    ]
    print(endpoint, flush=True)
    answer_cpu_until_eof(lambda: None)
    del keep
    session.close()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def zenoh_config(listen: List[str], connect: List[str]) -> Any:
    import json

    import zenoh

    c = zenoh.Config()
    c.insert_json5("mode", '"peer"')
    c.insert_json5("scouting/multicast/enabled", "false")
    c.insert_json5("scouting/gossip/enabled", "false")
    c.insert_json5("listen/endpoints", json.dumps(listen))
    c.insert_json5("connect/endpoints", json.dumps(connect))
    return c


# ------------------------------------------------------------------ driver


class Peer:
    """A server process: its address, and its CPU time on demand."""

    def __init__(self, role: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--serve", role],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        self.addr = self.proc.stdout.readline().strip()

    def cpu(self) -> float:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("cpu\n")
        self.proc.stdin.flush()
        return float(self.proc.stdout.readline())

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


Run = Tuple[float, float]  # wall seconds, CPU seconds of both processes


async def run_once(peer: Peer, f: Callable[[], Awaitable[float]]) -> Run:
    here, there = cpu_now(), peer.cpu()
    wall = await f()
    return wall, (cpu_now() - here) + (peer.cpu() - there)


async def rounds(
    n: int,
    a: Tuple[Peer, Callable[[], Awaitable[float]]],
    b: Tuple[Peer, Callable[[], Awaitable[float]]],
) -> List[Tuple[Run, Run]]:
    """``n`` rounds of A and B, interleaved (A B, B A, ...), after one
    uncounted run of each."""
    await a[1]()
    await b[1]()
    out = []
    for i in range(n):
        if i % 2 == 0:
            ra = await run_once(*a)
            rb = await run_once(*b)
        else:
            rb = await run_once(*b)
            ra = await run_once(*a)
        out.append((ra, rb))
    return out


def spread(v: List[float]) -> str:
    return f"**{statistics.median(v):.2f}×** ({min(v):.2f}–{max(v):.2f})"


def rate_row(measure: str, a: str, b: str, runs: List[Tuple[Run, Run]], count: int) -> None:
    rate = [(count / ra[0], count / rb[0]) for ra, rb in runs]
    cpu = [(ra[1] * 1e6 / count, rb[1] * 1e6 / count) for ra, rb in runs]
    print(
        f"| {measure} | {a}: {statistics.median(r[0] for r in rate) / 1e3:.1f} k/s"
        f" | {b}: {statistics.median(r[1] for r in rate) / 1e3:.1f} k/s"
        f" | {spread([x / y for x, y in rate])}"
        f" | {statistics.median(c[0] for c in cpu):.1f} / {statistics.median(c[1] for c in cpu):.1f} µs"
        f" | {spread([x / y for x, y in cpu])} |",
        flush=True,
    )


def rtt_row(measure: str, a: str, b: str, runs: List[Tuple[Run, Run]], count: int) -> None:
    us = [(ra[0] * 1e6 / count, rb[0] * 1e6 / count) for ra, rb in runs]
    cpu = [(ra[1] * 1e6 / count, rb[1] * 1e6 / count) for ra, rb in runs]
    print(
        f"| {measure} | {a}: {statistics.median(u[0] for u in us):.0f} µs"
        f" | {b}: {statistics.median(u[1] for u in us):.0f} µs"
        f" | {spread([x / y for x, y in us])}"
        f" | {statistics.median(c[0] for c in cpu):.1f} / {statistics.median(c[1] for c in cpu):.1f} µs"
        f" | {spread([x / y for x, y in cpu])} |",
        flush=True,
    )


async def drive(n_rounds: int, quick: bool, calls_only: bool = False) -> None:
    import oscloud
    import zenoh

    d = 10 if quick else 1
    casts, frames, calls = 100_000 // d, 100_000 // d, 4_000 // d
    ours, theirs = Peer("oscloud"), Peer("zenoh")
    try:
        node = await oscloud.Node.start(connect=[ours.addr])
        count = await node.lookup("count", wait=10)
        count_many = await node.lookup("count_many", wait=10)
        sink = await node.lookup("sink", wait=10)
        echo = await node.lookup("echo", wait=10)
        aecho = await node.lookup("aecho", wait=10)
        session = zenoh.open(zenoh_config(listen=[], connect=[theirs.addr]))
        deadline = time.monotonic() + 20
        while not any(r.ok is not None for r in session.get("bench/echo", timeout=1.0)):
            assert time.monotonic() < deadline, "the zenoh peer never answered"
        publisher = session.declare_publisher(
            "bench/data", congestion_control=zenoh.CongestionControl.BLOCK
        )
        sent = {"samples": 0, "frames": 0}

        async def oscloud_casts() -> float:
            start = time.perf_counter()
            for _ in range(casts):
                await count.cast(MSG)
            await count.call("n", timeout=120)
            return time.perf_counter() - start

        async def oscloud_casts_gathered() -> float:
            start = time.perf_counter()
            for _ in range(casts // 64):
                await asyncio.gather(*(count.cast(MSG) for _ in range(64)))
            await count.call("n", timeout=120)
            return time.perf_counter() - start

        async def oscloud_try_casts() -> float:
            start = time.perf_counter()
            for _ in range(casts):
                try:
                    count.try_cast(MSG)
                except oscloud.LinkBusy:
                    await count.cast(MSG)
            await count.call("n", timeout=120)
            return time.perf_counter() - start

        batch = [MSG] * 64

        def cast_many_to(ref: oscloud.ServerRef) -> Callable[[], Awaitable[float]]:
            async def go() -> float:
                start = time.perf_counter()
                for _ in range(casts // 64):
                    await ref.cast_many(batch)
                await ref.call("n", timeout=120)
                return time.perf_counter() - start

            return go

        async def oscloud_casts_to_many() -> float:
            start = time.perf_counter()
            for _ in range(casts):
                await count_many.cast(MSG)
            await count_many.call("n", timeout=120)
            return time.perf_counter() - start

        async def zenoh_puts(k: int) -> float:
            sent["samples"] += k
            start = time.perf_counter()
            for _ in range(k):
                publisher.put(PAYLOAD)
            for r in session.get("bench/until", payload=str(sent["samples"]), timeout=120.0):
                assert r.ok is not None
            return time.perf_counter() - start

        frame_batch = [PAYLOAD] * 64

        def pipe_to(port: str, many: bool) -> Callable[[], Awaitable[float]]:
            """Frames to the sink's ``port``: awaited one by one, or
            ``send_many`` of 64 if ``many``."""

            async def go() -> float:
                pipe = await sink.open_pipe(port)
                n = frames // 64 * 64 if many else frames
                sent["frames"] += n
                start = time.perf_counter()
                if many:
                    for _ in range(n // 64):
                        await pipe.send_many(frame_batch)
                else:
                    for _ in range(n):
                        await pipe.send(PAYLOAD)
                await sink.call(sent["frames"], timeout=120)
                elapsed = time.perf_counter() - start
                pipe.close()
                return elapsed

            return go

        def calls_to(ref: oscloud.ServerRef) -> Callable[[], Awaitable[float]]:
            async def go() -> float:
                start = time.perf_counter()
                for _ in range(calls):
                    await ref.call(MSG)
                return time.perf_counter() - start

            return go

        async def zenoh_gets() -> float:
            start = time.perf_counter()
            for _ in range(calls):
                for r in session.get("bench/echo", payload=PAYLOAD):
                    assert r.ok is not None
            return time.perf_counter() - start

        async def calls_rows() -> None:
            r = await rounds(n_rounds, (ours, calls_to(echo)), (theirs, zenoh_gets))
            rtt_row("call round trip to a `def` server vs zenoh `get`", "oscloud", "zenoh", r, calls)
            r = await rounds(n_rounds, (ours, calls_to(aecho)), (ours, calls_to(echo)))
            rtt_row("call round trip, `async def` server vs `def`", "async def", "def", r, calls)

        print(f"\n{n_rounds} interleaved rounds, two Python processes, TCP on 127.0.0.1\n")
        print("| measure | oscloud | baseline | ratio, median (min–max) | CPU per message, both processes | CPU ratio |")
        print("|---|---|---|---|---|---|")
        if not calls_only:
            r = await rounds(n_rounds, (ours, oscloud_casts), (theirs, lambda: zenoh_puts(casts)))
            rate_row("one-way casts/s, 64 B, vs zenoh `put`", "oscloud", "zenoh", r, casts)
            r = await rounds(n_rounds, (ours, oscloud_casts_gathered), (theirs, lambda: zenoh_puts(casts)))
            rate_row("the same, 64 casts per `gather`", "oscloud", "zenoh", r, casts // 64 * 64)
            r = await rounds(n_rounds, (ours, oscloud_try_casts), (theirs, lambda: zenoh_puts(casts)))
            rate_row("the same, `try_cast` (not awaited)", "oscloud", "zenoh", r, casts)
            r = await rounds(n_rounds, (ours, cast_many_to(count)), (theirs, lambda: zenoh_puts(casts)))
            rate_row("the same, `cast_many` of 64", "oscloud", "zenoh", r, casts // 64 * 64)
            r = await rounds(n_rounds, (ours, oscloud_casts_to_many), (theirs, lambda: zenoh_puts(casts)))
            rate_row("the same, one by one, to `handle_casts`", "oscloud", "zenoh", r, casts)
            r = await rounds(n_rounds, (ours, cast_many_to(count_many)), (theirs, lambda: zenoh_puts(casts)))
            rate_row("the same, `cast_many` of 64 to `handle_casts`", "oscloud", "zenoh", r, casts // 64 * 64)
            r = await rounds(n_rounds, (ours, pipe_to("in", False)), (theirs, lambda: zenoh_puts(frames)))
            rate_row("pipe frames/s, 64 B, vs zenoh `put`", "oscloud", "zenoh", r, frames)
            r = await rounds(n_rounds, (ours, pipe_to("in", True)), (theirs, lambda: zenoh_puts(frames)))
            rate_row("the same, `send_many` of 64", "oscloud", "zenoh", r, frames // 64 * 64)
            r = await rounds(n_rounds, (ours, pipe_to("in_many", False)), (theirs, lambda: zenoh_puts(frames)))
            rate_row("the same, read with `recv_many`", "oscloud", "zenoh", r, frames)
            r = await rounds(n_rounds, (ours, pipe_to("in_many", True)), (theirs, lambda: zenoh_puts(frames)))
            rate_row("the same, `send_many` of 64, read with `recv_many`", "oscloud", "zenoh", r, frames // 64 * 64)
        await calls_rows()
        publisher.undeclare()
        session.close()
        await node.stop()
    finally:
        ours.close()
        theirs.close()


def main(argv: Optional[List[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--serve", choices=["oscloud", "zenoh"], help=argparse.SUPPRESS)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--quick", action="store_true", help="a tenth of the messages (a smoke run)")
    p.add_argument("--calls-only", action="store_true", help="only the two call round-trip rows")
    args = p.parse_args(argv)
    if args.serve == "oscloud":
        asyncio.run(serve_oscloud())
    elif args.serve == "zenoh":
        serve_zenoh()
    else:
        asyncio.run(drive(args.rounds, args.quick, args.calls_only))


if __name__ == "__main__":
    main()
