"""The interpreter exits cleanly after using oscloud.

Each scenario is a short script run many times, each time in a fresh
interpreter, because what is checked happens after the script: while the
interpreter finalises, no runtime thread may still be inside a Python call
(one that is gets killed by CPython mid-call: SIGSEGV or SIGABRT, or
"Fatal Python error" with SIGABRT). The race is narrow, hence the runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import List, Optional, Tuple

import pytest

RUNS = 200
# Interpreters running at once: enough to keep the run short on two cores.
PARALLEL = 4
# Per run; a run that takes longer hung at exit.
TIMEOUT = 30.0

# Start a node and stop it, then exit: the runtime thread completing
# stop()'s future used to still be in Python when finalisation began.
START_STOP = """
import asyncio, oscloud

async def main():
    node = await oscloud.Node.start()
    await node.stop()

asyncio.run(main())
"""

# Five starts dialling an unreachable address: the first LinkError leaves
# asyncio.run while the other four are still being completed.
GATHER_UNREACHABLE = """
import asyncio, oscloud

async def main():
    await asyncio.gather(
        *(oscloud.Node.start(connect=["tcp://127.0.0.1:1"]) for _ in range(5))
    )

asyncio.run(main())
"""

# Exit with two linked nodes running, never stopped, and calls in flight:
# the runtime is shut down at exit with servers and their handlers alive.
LEFT_RUNNING = """
import asyncio, oscloud

async def main():
    a = await oscloud.Node.start(listen=["tcp://127.0.0.1:0"])
    b = await oscloud.Node.start(connect=a.addresses)

    @a.server("slow")
    async def slow(text):
        await asyncio.sleep(60)
        return text

    ref = await b.lookup("slow", wait=5)
    calls = [asyncio.ensure_future(ref.call(i, timeout=60)) for i in range(3)]
    await asyncio.sleep(0)

asyncio.run(main())
"""


def run_once(script: str) -> Tuple[Optional[int], str]:
    """Run `script` in a fresh interpreter: its exit code (None if it hung)
    and its stderr."""
    try:
        done = subprocess.run(
            [sys.executable, "-c", script],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=TIMEOUT,
            text=True,
        )
    except subprocess.TimeoutExpired as e:
        err = e.stderr.decode() if isinstance(e.stderr, bytes) else (e.stderr or "")
        return None, err
    return done.returncode, done.stderr


@pytest.mark.parametrize(
    ("script", "runs", "expected_code", "expected_error"),
    [
        pytest.param(START_STOP, RUNS, 0, None, id="start-stop"),
        pytest.param(GATHER_UNREACHABLE, RUNS, 1, "oscloud.errors.LinkError", id="gather-unreachable"),
        # Slower per run (a TCP link and a lookup): fewer runs.
        pytest.param(LEFT_RUNNING, RUNS // 4, 0, None, id="left-running"),
    ],
)
def test_interpreter_exits_cleanly(
    script: str, runs: int, expected_code: int, expected_error: Optional[str]
) -> None:
    with ThreadPoolExecutor(PARALLEL) as pool:
        results = list(pool.map(run_once, [script] * runs))
    bad: List[str] = []
    for code, err in results:
        if code != expected_code or "Fatal Python error" in err:
            what = "hung" if code is None else f"exit code {code}"
            bad.append(f"{what}: {err.strip()[-400:]}")
        elif expected_error is not None and expected_error not in err:
            bad.append(f"no {expected_error} in stderr: {err.strip()[-400:]}")
    assert not bad, f"{len(bad)} of {runs} runs did not exit cleanly; first: {bad[0]}"


# atexit hooks run last registered first: one registered after importing
# oscloud still has the runtime; one registered before gets a clear error.
AT_EXIT = """
import asyncio, atexit

def before_import():
    try:
        asyncio.run(oscloud.Node.start())
    except oscloud.Error as e:
        print("before import:", e)

atexit.register(before_import)

import oscloud

node = None

async def start():
    global node
    node = await oscloud.Node.start()

async def stop():
    await node.stop()
    print("after import: stopped")

asyncio.run(start())
atexit.register(lambda: asyncio.run(stop()))
"""


def test_atexit_hooks_use_the_runtime_until_it_shuts_down() -> None:
    done = subprocess.run(
        [sys.executable, "-c", AT_EXIT], capture_output=True, text=True, timeout=TIMEOUT
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "after import: stopped",
        "before import: the oscloud runtime is not available: "
        "it is shut down: the interpreter is exiting",
    ]


# A child made by fork has none of the runtime's threads: it gets a clear
# error from the API and exits (it used to wait for those threads), and
# the parent's runtime goes on.
FORK = """
import asyncio, os, oscloud

async def start_stop():
    node = await oscloud.Node.start()
    await node.stop()

asyncio.run(start_stop())
pid = os.fork()
if pid == 0:
    try:
        asyncio.run(start_stop())
    except oscloud.Error as e:
        print("child:", e, flush=True)
else:
    _, status = os.waitpid(pid, 0)
    asyncio.run(start_stop())
    print("parent: child exited with", os.waitstatus_to_exitcode(status))
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_gives_up_the_runtime() -> None:
    done = subprocess.run(
        [sys.executable, "-c", FORK], capture_output=True, text=True, timeout=TIMEOUT
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "child: the oscloud runtime is not available: "
        "this process is a fork of the one it runs in",
        "parent: child exited with 0",
    ]
