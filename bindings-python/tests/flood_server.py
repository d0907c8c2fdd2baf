"""The receiving end of the flood tests (tests/tests/flood.rs) as a Python
node: ``python flood_server.py NAME URI SETTINGS`` starts a node with
SETTINGS (``key=value, ...``, as ``Node.start(config=...)``), listens at URI
and registers two Python servers, named after NAME as oscloud-testnode's
are:

- ``upper-NAME``: a call with a string answers it upper-cased, tagged
  `` from NAME``;
- ``slow-NAME``: handles casts slowly (10 000 a second at most); a call
  answers how many casts it handled, as a string.

It prints ``listening ADDRESS`` and ``ready``, then serves until its stdin
ends (or reads ``quit``).
"""

from __future__ import annotations

import asyncio
import sys
from typing import Dict

import oscloud


def settings(text: str) -> Dict[str, str]:
    items = (item.split("=", 1) for item in text.split(",") if item.strip())
    return {key.strip(): value.strip() for key, value in items}


async def main(name: str, uri: str, config: str) -> None:
    node = await oscloud.Node.start(config=settings(config))

    @node.server(f"upper-{name}")
    async def upper(text: str) -> str:
        return f"{text.upper()} from {name}"

    @node.server(f"slow-{name}")
    class Slow:
        def __init__(self) -> None:
            self.handled = 0

        async def handle_cast(self, _message: str) -> None:
            self.handled += 1
            if self.handled % 10 == 0:
                await asyncio.sleep(0.001)

        async def handle_call(self, _message: str) -> str:
            return str(self.handled)

    at = await node.listen(uri)
    print(f"listening {at}\nready", flush=True)
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line or line.startswith("quit"):
            break
    await node.stop()


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit("usage: flood_server.py NAME URI SETTINGS")
    asyncio.run(main(*sys.argv[1:]))
