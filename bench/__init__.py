"""The side-by-side benchmark harness: jobq against the raw-SQLite limit and the peer libraries.

``python -m bench`` (``make bench``) measures every system in one invocation on this machine and
writes ``docs/benchmarks.md`` and ``docs/benchmarks.png``; ``--quick`` is the minute-or-two
development mode. Layout:

- ``core.py``: what is measured and how (enqueue, claim+complete with N spawned processes,
  latency at a fixed offered load, idle CPU), independent of any system.
- ``adapters/``: one module per system, each a small class with the same few methods.
- ``pg.py``: a throwaway PostgreSQL server for the PostgreSQL rows.
- ``apps.py``: render time of the Streamlit apps on a 125,000-job database, in Chromium.
- ``profiling.py``: cProfile of jobq's claim+complete loop.
- ``report.py``: the table (stdout and Markdown), the ratios, the chart, the machine.
"""
