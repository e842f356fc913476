"""Coven benchmarks: every workload through the daemon's real API, beside its physical limit.

    make bench                                  # or: .venv/test/bin/python -m tests.bench
    make bench ARGS="--quick"                   # a smoke run, about a minute
    make bench ARGS="--repeat 5 --json out.json --only throughput,echo"

Not collected by pytest (``norecursedirs``); budgets are in ``shared/DESIGN.md`` and are
reported, never asserted as absolute times in tests. See ``README.md`` beside this file.
"""
