"""The live view: ``python -m asynclens top PID`` (attached) and ``run --live`` (own process).

``snapshot`` reads what only the live session knows (open handles, the tasks alive
now), ``model`` folds records and snapshots into the figures the view shows,
``screen`` turns them into at most 24 lines of 80 columns of plain text, and
``terminal`` refreshes it about once a second, reads the keys, or prints a plain
summary every second when the output is not a terminal. See ``docs/attach.md``.
"""
