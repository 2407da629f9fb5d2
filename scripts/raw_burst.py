"""A burst of online requests from a client that does nothing but note when each reply arrives:
`.venv/bin/python scripts/raw_burst.py [N]` against the running stack (NATS settings as for the
CLI). `bench --concurrency N` measures the same burst with a task per request, whose own
scheduling lands in its figures; this prints what the router takes, refusals and answers apart.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid

from shared import subjects
from shared.config import settings
from smart_router import client
from smart_router.bench.pipeline import Prompts, percentiles


async def burst(count: int) -> dict:
    nc = await client.connect(settings())
    inbox = f"{nc.new_inbox()}.burst"
    arrived: dict[str, tuple[float, bytes]] = {}
    all_in = asyncio.Event()

    async def note(msg) -> None:  # nothing else: the client's own work stays out of the figures
        arrived[msg.subject] = (time.perf_counter(), msg.data)
        if len(arrived) == count:
            all_in.set()

    await nc.subscribe(f"{inbox}.*", cb=note)
    prompts, tenant = Prompts.test_split(unique=True), f"burst-{uuid.uuid4().hex[:8]}"
    bodies = [json.dumps({"prompt": prompts[i], "tenant": tenant}).encode() for i in range(count)]
    sent: dict[str, float] = {}
    for i, body in enumerate(bodies):
        sent[f"{inbox}.{i}"] = time.perf_counter()
        await nc.publish(subjects.CHAT, body, reply=f"{inbox}.{i}")
    await nc.flush()
    await asyncio.wait_for(all_in.wait(), 120)
    await nc.close()
    refused, answered = [], []
    for reply_to, (at, data) in arrived.items():
        code = json.loads(data).get("error", {}).get("code")
        (refused if code == "overloaded" else answered).append((at - sent[reply_to]) * 1000)
    return {"requests": count, "tenant": tenant,
            "refused": len(refused), "refused_ms": percentiles(refused),
            "answered": len(answered), "answered_ms": percentiles(answered)}


if __name__ == "__main__":
    print(json.dumps(asyncio.run(burst(int(sys.argv[1]) if len(sys.argv) > 1 else 2000))))
