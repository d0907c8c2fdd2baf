"""A Python node for the console's browser test: links to the console's
node and serves ``py-reverse`` (a string in, the string reversed out)
until killed. Usage: python py_server.py tcp://127.0.0.1:PORT
"""

import asyncio
import sys

import oscloud


async def start(address: str) -> oscloud.Node:
    """Dial until the node is up (10 s)."""
    for _ in range(100):
        try:
            return await oscloud.Node.start(connect=[address])
        except oscloud.Error:
            await asyncio.sleep(0.1)
    return await oscloud.Node.start(connect=[address])


async def main(address: str) -> None:
    async with await start(address) as node:

        @node.server("py-reverse")
        async def reverse(text: str) -> str:
            return text[::-1]

        print("py-reverse up", flush=True)
        await asyncio.Event().wait()


asyncio.run(main(sys.argv[1]))
