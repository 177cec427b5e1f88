"""The demo's file jobs: producers write files and submit them, consumers stamp each file once.

An application of the queue, not part of its API: what ``supervisord.conf`` runs (see
``docs/demo.md``). It is started only through the ``jobq`` command line, ``jobq producer`` and
``jobq consumer`` (``src/producer/producer.py`` and ``src/consumer/consumer.py`` call it), which
call ``producer.run_producer`` and ``consumer.run_consumer``; ``jobq enqueue PATH`` calls
``producer.submit_file``. Modules, each importing only those above it:

- ``paths``: where a job may write: a path checked and opened under the data root.
- ``stamps``: the stamp line of one run of a job, and finding the stamps in a file.
- ``files``: the effects on disk: a new job file, written whole; a run's stamp, written once.
- ``producer``: the producer loop and ``submit_file``.
- ``consumer``: the ``stamp`` handler and the consumer, a ``jobq.worker.Worker`` running it.
"""
