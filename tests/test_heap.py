"""A service freezes what start-up built out of the garbage collector's scans (a full collection
of the dispatcher's heap took about 150 ms, and came every few hundred requests), and the
collector still frees the cycles its requests leave. Run in a process of its own: freezing the
test process would keep pytest's own heap out of every later test's collections."""

from __future__ import annotations

import json
import subprocess
import sys

from shared.runtime import GC_YOUNG_THRESHOLD

STARTUP_OBJECTS = 200_000

SCRIPT = f"""
import asyncio, gc, json, weakref
from shared import runtime

startup = [[n] for n in range({STARTUP_OBJECTS})]  # containers kept for the process's life
asyncio.run(runtime._freeze_the_startup_heap())

class Node:
    pass

first, second = Node(), Node()
first.peer, second.peer = second, first  # a cycle: reference counts alone never free it
freed = weakref.ref(first)
del first, second
gc.collect()
print(json.dumps({{"frozen": gc.get_freeze_count(), "young": gc.get_threshold()[0],
                  "cycle_freed": freed() is None}}))
"""


def test_start_up_objects_are_frozen_and_later_cycles_still_freed():
    run = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                         timeout=60, check=True)
    seen = json.loads(run.stdout)

    assert seen["frozen"] >= STARTUP_OBJECTS
    assert seen["young"] == GC_YOUNG_THRESHOLD
    assert seen["cycle_freed"]
