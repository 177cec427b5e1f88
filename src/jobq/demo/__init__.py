"""The demo's file jobs: producers write files and submit them, consumers stamp each file once.

Not part of the queue library: an application of it, run by ``supervisord.conf`` (see
``docs/demo.md``). Modules:

- ``files``: file jobs on disk: writing new job files, and stamping one exactly once per run.
- ``producer``: the producer loop and ``submit_file`` (also used by ``jobq enqueue PATH``).
- ``consumer``: the ``stamp`` handler and the consumer loop, a ``jobq.worker.Worker``.
"""
