"""Child processes of `mme serve` that end with it, even when it is killed (SIGKILL).

`mme serve` stops MMS and the zygote itself when it is asked to; when it is killed
instead, they would run on as orphans, holding memory and the port's neighbours. The
kernel's parent-death signal ends them: ``setpriv`` (util-linux, on every Debian)
sets it for a command before it runs.
"""

from __future__ import annotations

import shutil


def dying_with_parent(command: list[str]) -> list[str]:
    """``command``, run so that the kernel kills it when the process that started it dies."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL", "--", *command] if setpriv else command
