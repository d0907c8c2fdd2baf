"""How a server's handler that returned an awaitable is run on the node's
event loop (used by the native module, not part of the API).

The server's runtime thread, holding the GIL, hands the awaitable and a
native ``done`` callable to :func:`start` with one
``loop.call_soon_threadsafe`` (one wake-up of the loop). :func:`start`
runs on the loop's thread: it wraps the awaitable in a task whose last
step gives the outcome to ``done`` (which converts it and wakes the
server), so the reply leaves from the step that finished the handler,
without a done-callback's loop iteration. On Python 3.12 and later the
task starts eagerly: a handler that does not suspend runs to its end
within :func:`start`, in its task (``asyncio.current_task()``,
``asyncio.timeout`` and task groups work as in any task), and one that
suspends goes on as an ordinary task.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any, Awaitable, Callable, Optional

Done = Callable[[Any, Optional[BaseException]], None]

_EAGER = sys.version_info >= (3, 12)


async def _run(awaitable: Awaitable[Any], done: Done) -> None:
    try:
        result = await awaitable
    except (KeyboardInterrupt, SystemExit) as e:
        done(None, e)
        raise
    except BaseException as e:  # CancelledError included: the call fails
        done(None, e)
    else:
        done(result, None)


def start(loop: asyncio.AbstractEventLoop, awaitable: Awaitable[Any], done: Done) -> None:
    """Run ``awaitable`` as a task of ``loop`` (the running loop) and call
    ``done(result, None)`` or ``done(None, exception)`` from its last step."""
    coro = _run(awaitable, done)
    if _EAGER:
        asyncio.Task(coro, loop=loop, eager_start=True)  # type: ignore[call-arg]
    else:
        loop.create_task(coro)
