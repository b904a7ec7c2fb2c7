"""What the tests and the tools (bench/, soak/) share: real servers, model folders, the
processes a server runs, and waiting for a condition with a deadline.

Nothing here depends on tests/: the tools import it, and so does the test suite.

* :mod:`harness.polling`: wait until a condition holds, or a value settles, boundedly;
* :mod:`harness.servers`: `mme serve` (and any server that answers ``/ping``) as a child
  process on a free port of 127.0.0.1, stopped with SIGTERM;
* :mod:`harness.endpoint`: `mme endpoint` and the `mme serve` behind it, with dummy AWS
  credentials;
* :mod:`harness.processes`: a server's processes, and which of them serve a model;
* :mod:`harness.proc`: what a process holds (threads, open files, memory), from /proc;
* :mod:`harness.models`: model folders laid out as SageMaker extracts model.tar.gz;
* :mod:`harness.prometheus`: a server's /metrics, read with the Prometheus client's parser.
"""
