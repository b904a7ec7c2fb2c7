"""Make a forked child's command line read like the worker's it replaces.

``ps``, MMS's operators and our own tools find workers by their command line
(``--model-name``, ``--sock-name``); a forked child would otherwise show the zygote's.
Linux shows ``/proc/<pid>/cmdline`` from the process's original argument memory, so the
zygote starts with spare room in its arguments (:data:`ROOM_ARGUMENT`) and the child
overwrites that memory through ``/proc/self/mem``. Nothing breaks if that is refused.
"""

from __future__ import annotations

import logging
import os

logger = logging.getLogger(__name__)

ROOM_BYTES = 8192
ROOM_ARGUMENT = "--argv-room=" + "." * ROOM_BYTES
_ARG_START_FIELD, _ARG_END_FIELD = 47, 48  # of /proc/self/stat, counted from 0 (man 5 proc)


def _argument_area() -> tuple[int, int]:
    # Plain system calls, here and below: the Python objects of text files would be
    # allocated in (and copy) the zygote's pages that a forked child shares.
    fd = os.open("/proc/self/stat", os.O_RDONLY)
    try:
        stat = os.read(fd, 4096)
    finally:
        os.close(fd)
    # The command name, field 1, is in parentheses and may contain spaces.
    fields = stat.rsplit(b")", 1)[1].split()
    offset = 2  # the fields after ")" start at field 2
    return int(fields[_ARG_START_FIELD - offset]), int(fields[_ARG_END_FIELD - offset])


def set_command_line(argv: list[str]) -> bool:
    """Show ``argv`` as this process's command line; False when it cannot be done."""
    encoded = b"".join(arg.encode("utf-8", "surrogateescape") + b"\0" for arg in argv)
    try:
        start, end = _argument_area()
        if len(encoded) > end - start:
            logger.warning(
                "prefork: the command line (%d bytes) does not fit in %d bytes",
                len(encoded),
                end - start,
            )
            return False
        # NULs fill the rest: ps shows nothing for them (psutil, empty trailing arguments),
        # and the area must end in a NUL, or Linux reads it as one setproctitle string.
        padded = encoded + b"\0" * (end - start - len(encoded))
        memory = os.open("/proc/self/mem", os.O_RDWR)
        try:
            os.pwrite(memory, padded, start)
        finally:
            os.close(memory)
    except OSError as exc:
        logger.warning("prefork: cannot set the worker's command line: %s", exc)
        return False
    return True
