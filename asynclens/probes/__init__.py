"""Instrumentation points that turn a running program into records.

Each probe is a folder: :mod:`.lag` (loop lag, stalls, the watchdog),
:mod:`.handles` (open sockets, files, tasks, threads), :mod:`.scheduler` (task
steps, scheduling delay, GC, executor jobs). The private modules beside them are
the tools they share: removable patches, per-instance attributes, the loop
watcher and the task listing. Probes emit records to the session; they never
import sinks, the report or the pytest plugin.
"""
