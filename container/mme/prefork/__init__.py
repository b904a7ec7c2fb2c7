"""Pre-forked workers: MMS's Python workers forked from a warm parent instead of started fresh.

MMS starts each worker as ``<python> .../mms/model_service_worker.py <args>``. In prefork
mode `mme serve` gives MMS a launcher (:mod:`mme.prefork.launcher`) as that ``<python>``;
the launcher hands its arguments, environment, working directory and standard streams
to the zygote (:mod:`mme.prefork.zygote`), a process that has imported torch and the
serving stack once, and the zygote forks a child that becomes the worker
(:mod:`mme.prefork.child`). Importing this package imports nothing: the launcher must
start in milliseconds.
"""
