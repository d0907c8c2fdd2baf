"""A rules engine written in Python, dropped into an oscloud cloud.

It starts a node, registers two Python servers and uses them:

- ``rules`` (a class: its state survives between messages, and is fresh
  after a restart) takes readings by cast and answers queries by call;
- ``alerts`` (an async function) collects the alerts ``rules`` sends it.

One query is bad: ``rules`` raises on it, the caller gets an
``oscloud.RemoteError`` with the exception's type and message, and the
server's supervisor restarts it.

With ``--connect ADDRESS`` it also links to another node (for example the
Rust ``examples/node`` serving ``upper``) and calls that node's ``upper``
server exactly like a local one::

    cargo run --example node -- --listen tcp://127.0.0.1:7000 --serve upper &
    python examples/python/rules.py --connect tcp://127.0.0.1:7000

The run ends by itself with a summary.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Dict, List, Optional, Union

import oscloud

Reading = Dict[str, Union[str, float]]


async def run(connect: Optional[str]) -> None:
    async with await oscloud.Node.start(listen=["tcp://127.0.0.1:0"]) as node:
        print(f"node {node.id[:8]} listening at {', '.join(node.addresses)}")
        alerts: List[str] = []

        @node.server("alerts", accepts=["alert"])
        async def collect(alert: str) -> None:
            alerts.append(alert)

        class Rules:
            """Alerts when a sensor goes over its limit."""

            def __init__(self) -> None:
                self.limit = 30.0
                self.seen = 0
                self.alerts = node.server_ref("alerts")

            async def handle_cast(self, reading: Reading) -> None:
                self.seen += 1
                value = float(reading["value"])
                if value > self.limit:
                    await self.alerts.cast(f"{reading['sensor']} at {value}")

            async def handle_call(self, query: str) -> Union[int, float]:
                if query == "seen":
                    return self.seen
                if query == "limit":
                    return self.limit
                raise KeyError(query)

        # The decorator form works for classes too (`@node.server(...)` on
        # the class); called directly, type checkers see the handle it returns.
        rules_server = node.server(
            "rules", accepts=["reading"], produces=["alert"], max_restarts=3, period=5.0
        )(Rules)
        rules = await node.lookup("rules")
        for i, value in enumerate([21.5, 35.0, 28.0, 41.25]):
            await rules.cast({"sensor": f"s{i}", "value": value})
        print(f"rules saw {await rules.call('seen')} readings")

        try:
            await rules.call("nonsense")
        except oscloud.RemoteError as err:
            print(f"rules raised {err.remote_type}: {err.remote_message}")
        # The supervisor restarts it with fresh state; until the new instance
        # is registered the name is unknown (NotFound), so try again briefly.
        for _ in range(500):
            try:
                seen = await rules.call("seen")
                break
            except oscloud.NotFound:
                await asyncio.sleep(0.01)
        else:
            raise RuntimeError("rules did not come back within 5 s")
        print(f"after {rules_server.restarts} restart(s) rules saw {seen} readings")

        # Wait until the alerts cast by rules were handled.
        await node.server_ref("alerts").call("flush")
        print(f"alerts: {alerts[:-1]}")

        if connect is not None:
            peer = await node.connect(connect)
            upper = await node.lookup("upper", wait=10.0)
            print(f"linked to node {peer[:8]}: upper says {await upper.call('hello from python')!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connect", help="also link to this address and call its `upper` server")
    args = parser.parse_args()
    asyncio.run(run(args.connect))


if __name__ == "__main__":
    main()
