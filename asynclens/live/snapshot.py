"""What the view needs that no record carries: open handles by kind, the live tasks."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from ..probes.scheduler.steps import ATTR

__all__ = ["live_snapshot"]

#: The most live tasks a snapshot carries (the busiest by CPU, by delay and the oldest).
TASK_LIMIT = 30


def live_snapshot(session: Any) -> dict[str, Any]:
    """``{"now_ns", "handles": {kind: n}, "tasks": [...]}`` of an active session, from any thread."""
    now = session.now()
    handles: Counter[str] = Counter()
    for record in session.open_handles():
        handles[str(getattr(record, "handle_kind", "?"))] += 1
    tasks: list[dict[str, Any]] = []
    probe = session.probe("scheduler")
    loops = list(getattr(probe, "_loops", {}).keys()) if probe is not None else []
    for loop in loops:
        try:
            alive = list(asyncio.all_tasks(loop))
        except Exception:  # the loop's thread changed its task set while we copied: next time
            continue
        for task in alive:
            state = getattr(task, ATTR, None)
            if state is None:  # older than the session (an attach): alive since then at least, its steps unknown
                tasks.append({"name": task.get_name(), "created_ns": session.start_ns, "cpu_ns": 0, "sched_ns": 0})
                continue
            tasks.append(
                {
                    "name": task.get_name(),
                    "created_ns": int(getattr(state, "created_ns", now) or now),
                    "cpu_ns": int(getattr(state, "run_ns", 0) or 0),
                    "sched_ns": int(getattr(state, "sched_ns", 0) or 0),
                }
            )
    if len(tasks) > TASK_LIMIT:
        keep: dict[int, dict[str, Any]] = {}
        for key in ("cpu_ns", "sched_ns"):
            for t in sorted(tasks, key=lambda t: t[key], reverse=True)[: TASK_LIMIT // 3]:
                keep[id(t)] = t
        for t in sorted(tasks, key=lambda t: t["created_ns"])[: TASK_LIMIT // 3]:
            keep[id(t)] = t
        tasks = list(keep.values())
    return {"now_ns": now, "handles": dict(handles), "tasks": tasks}
