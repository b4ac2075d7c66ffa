"""The cyclic garbage collector set for a long-running server that holds thousands of sessions.

A full (generation 2) collection walks every container the process holds, on the one reactor
thread. In the presence storm benchmark (2,500 users with 60 contacts each) CPython's defaults
(700, 10, 10) made a full pass every 2 to 8 s while the sessions signed in, 100 to 420 ms each
as the heap grew, so on a busy machine one could fall inside the storm and be the worst stall a
user felt (the goal is under 10 ms). Two changes, applied once the server has started:

- freeze: what start-up made (modules, config, listeners, the store's caches and every roster,
  about half a million objects with 2,500 users) lives as long as the process; gc.freeze() moves
  it out of every generation, so no later pass walks it. Reference counting still frees it.
- generation 2's threshold raised tenfold: a full pass waits for 100 generation-1 passes
  instead of 10. The storm at 10x the planning rate makes about one generation-1 pass every 10 s;
  in the benchmark no full pass came after start-up at all, sign-ins included.

The young generations keep their defaults: measured under the storm, a first-generation
threshold of 10,000 made each young pass 10 to 15 ms (the pass walks every container made
since the last one, not only the net growth the threshold counts), where 700 keeps it near 1 ms.

Cyclic garbage made after start-up is still found: by the young passes while it is young, by
the rarer full passes once old (CPython also waits until the objects promoted since the last
full pass number a quarter of those it kept, so old garbage stays bounded by the heap). Nothing
made after start-up is frozen, so the objects of a session that ends are freed as before.
"""

from __future__ import annotations

import gc

# passes of generation 0 after this many more containers made than freed, of generation 1
# after this many generation-0 passes, of generation 2 after this many generation-1 passes
THRESHOLDS = (700, 10, 100)


def tune_after_start() -> int:
    """Collect start-up garbage, freeze what is left and raise the thresholds.

    Returns how many objects were frozen. Call once, on the reactor thread, after the server
    has started and before it carries load.
    """
    # start-up garbage goes now: frozen, it would never be collected
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
    return gc.get_freeze_count()
