"""The scale benchmark's probe inside the operator process: asyncio tasks, event-loop lag, memory and object census.

Runs as a thread of `scale.py --operator-child`; writes one JSON line per sample to the file it is given.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from harness import proc_status_mib

PROBE_EVERY = 1.0
TRACEMALLOC_FRAMES = int(os.environ.get("SCALE_PROBE_TRACEMALLOC", "0") or 0)  # with the census: where the memory was allocated
OBJECTS_EVERY = int(os.environ.get("SCALE_PROBE_OBJECTS", "0") or 0)  # every this many probe samples: live objects by type


def probe(out: Path) -> None:
    import asyncio.tasks

    found = {"max_asyncio_tasks": 0, "max_loop_lag_s": 0.0, "samples": 0, "specserve_file": None}
    while True:
        time.sleep(PROBE_EVERY)
        try:
            tasks = list(asyncio.tasks._all_tasks)  # the C WeakSet behind asyncio.all_tasks(), read from this thread
        except RuntimeError:  # changed while copied; next second
            continue
        live = [t for t in tasks if not t.done()]
        loop = next((t.get_loop() for t in live), None)
        if loop is None or not loop.is_running():
            continue
        sent, ran = time.monotonic(), []
        done = threading.Event()
        loop.call_soon_threadsafe(lambda: (ran.append(time.monotonic() - sent), done.set()))
        done.wait(60)
        lag = ran[0] if ran else 60.0
        found["samples"] += 1
        if len(live) > found["max_asyncio_tasks"]:  # what the tasks are, at the most: the coroutines' names
            kinds = Counter(getattr(t.get_coro(), "__qualname__", "?") for t in live)
            found["tasks_at_max"] = dict(kinds.most_common(8))
        found["max_asyncio_tasks"] = max(found["max_asyncio_tasks"], len(live))
        found["max_loop_lag_s"] = round(max(found["max_loop_lag_s"], lag), 4)
        found["asyncio_tasks_now"] = len(live)
        del tasks, live, loop  # the census below must not find the finished tasks held by this thread's own lists
        if OBJECTS_EVERY and found["samples"] % OBJECTS_EVERY == 0:  # diagnosis only: holds the GIL for a second or so
            found.setdefault("objects", []).append(_objects())
            if os.environ.get("SCALE_PROBE_COLLECT"):  # diagnosis: how much of it was garbage in reference cycles
                import gc

                before = proc_status_mib(os.getpid(), "VmRSS")
                started = time.monotonic()
                freed = gc.collect()
                found["objects"][-1]["gc_collect"] = {"freed": freed, "seconds": round(time.monotonic() - started, 2),
                                                      "rss_before": before, "rss_after": proc_status_mib(os.getpid(), "VmRSS"),
                                                      "stats": gc.get_stats()}
            if TRACEMALLOC_FRAMES:
                found["objects"][-1]["tracemalloc"] = _allocations(out)
            if os.environ.get("SCALE_PROBE_MALLOC"):  # diagnosis: Python's objects against the C heap, and what trimming gives back
                found["objects"][-1]["malloc"] = _malloc(trim=bool(os.environ.get("SCALE_PROBE_TRIM")))
        module = sys.modules.get("specserve")
        found["specserve_file"] = getattr(module, "__file__", None)
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(found))
        tmp.replace(out)


def _malloc(trim: bool) -> dict[str, Any]:
    """glibc's mallinfo2 (MiB): heap obtained from the OS (arena, mmapped), in use, free inside it; Python's allocated
    blocks; with `trim`, VmRSS before and after malloc_trim(0), which hands free heap pages back to the OS."""
    import ctypes

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2
    info = libc.mallinfo2()
    found: dict[str, Any] = {k: round(getattr(info, k) / 2**20, 1) for k in ("arena", "hblkhd", "uordblks", "fordblks")}
    found["python_allocated_blocks"] = sys.getallocatedblocks()
    if trim:
        before = proc_status_mib(os.getpid(), "VmRSS")
        libc.malloc_trim(0)
        found["trim_rss_before"], found["trim_rss_after"] = before, proc_status_mib(os.getpid(), "VmRSS")
    return found


def _allocations(out: Path) -> dict[str, Any]:
    """tracemalloc's live Python memory now; the snapshot itself is dumped beside the probe file for reading later
    (grouping a million traces here would hold the operator up for minutes)."""
    import tracemalloc

    current, peak = tracemalloc.get_traced_memory()
    path = out.with_name(f"{out.stem}.{int(time.time())}.tracemalloc")
    tracemalloc.take_snapshot().dump(str(path))
    return {"traced_mib": round(current / 2**20, 1), "traced_peak_mib": round(peak / 2**20, 1), "snapshot": str(path)}


def _objects() -> dict[str, Any]:
    """The live Python objects the garbage collector tracks, by type: the 15 largest by shallow size, and VmRSS."""
    import gc

    count: Counter[str] = Counter()
    size: Counter[str] = Counter()
    for obj in gc.get_objects():
        name = type(obj).__qualname__
        count[name] += 1
        try:
            size[name] += sys.getsizeof(obj)
        except TypeError:
            pass
    rss = proc_status_mib(os.getpid(), "VmRSS")
    import asyncio

    done = [o for o in gc.get_objects() if isinstance(o, asyncio.Task) and o.done()]
    holders: Counter[str] = Counter()
    sample = done[:: max(1, len(done) // 20)][:20]
    for task in sample:  # who keeps finished tasks alive
        for ref in gc.get_referrers(task):
            if ref is done or ref is sample:
                continue
            what = type(ref).__qualname__
            if hasattr(ref, "f_code"):  # a frame: whose
                what += ":" + ref.f_code.co_qualname
            elif isinstance(ref, dict):
                what += "{" + ",".join(sorted(str(k) for k in list(ref)[:4])) + "}"
            elif isinstance(ref, list):  # which list: its length and who holds it
                owners = [type(o).__qualname__ + (":" + getattr(o, "__qualname__", "") if hasattr(o, "f_code") or hasattr(o, "cr_code") else "")
                          for o in gc.get_referrers(ref) if o is not sample and o is not done][:3]
                what += f"[len {len(ref)}] held by {owners}"
            holders[what] += 1
    names = Counter(getattr(t.get_coro(), "__qualname__", "?") for t in done)
    # Kopf's per-object backlogs: watch events delivered and not yet processed, each a whole parsed body
    waiting: Counter[str] = Counter()
    for stream in (o for o in gc.get_objects() if type(o).__name__ == "Stream" and type(o).__module__.startswith("kopf.")):
        for raw_event in list(stream.backlog._queue):
            waiting[str((raw_event.get("object") or {}).get("kind")) if isinstance(raw_event, dict) else "EOS"] += 1
    # Kopf's per-object memories, and the bodies the daemons keep (a daemon holds its object's latest full body)
    memories = [o for o in gc.get_objects() if type(o).__name__ == "ResourceMemory"]
    bodies, body_bytes, seen = 0, 0, set()
    for memory in memories:
        body = memory.daemons_memory.live_fresh_body
        if body is not None:
            bodies += 1
            body_bytes += _deep_size(getattr(body, "_src", None), seen)
    return {"kopf_resource_memories": len(memories), "daemon_bodies": bodies, "daemon_bodies_deep_mib": round(body_bytes / 2**20, 1),"rss_mib": rss, "objects": sum(count.values()), "mib_by_type": {k: [count[k], round(v / 2**20, 1)] for k, v in size.most_common(15)},
            "kopf_backlog_events": dict(waiting), "done_tasks": len(done), "done_tasks_by_coro": dict(names.most_common(5)), "done_task_holders": dict(holders.most_common(8))}


def _deep_size(value: Any, seen: set[int]) -> int:
    """Bytes of a parsed JSON value and everything in it (each object counted once)."""
    total, stack = 0, [value]
    while stack:
        item = stack.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        total += sys.getsizeof(item)
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return total
