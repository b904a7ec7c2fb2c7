"""The worker guard with real processes: a stuck worker ends, busy markers tell the truth."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from mme.worker_guard import ABANDON_GRACE_S, ABANDONED_EXIT_CODE

TIMEOUT_S = 120


def guarded_python(work: str, after: str = "") -> subprocess.Popen[str]:
    """A Python process that does ``work`` guarded with a 1 s limit, then ``after``."""
    script = textwrap.dedent(f"""
        import logging, time
        from mme.worker_guard import guarded
        logging.basicConfig(level=logging.INFO)
        with guarded("the test work", 1, on_abandon=lambda: print("reported", flush=True)):
            {work}
        {after}
    """)
    return subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def test_a_worker_that_outlives_the_limit_ends_itself_and_one_in_time_does_not() -> None:
    stuck = guarded_python("time.sleep(3600)")
    prompt = guarded_python("pass", f"time.sleep({1 + ABANDON_GRACE_S + 2}); print('survived')")
    stuck_output, _ = stuck.communicate(timeout=TIMEOUT_S)
    prompt_output, _ = prompt.communicate(timeout=TIMEOUT_S)
    assert stuck.returncode == ABANDONED_EXIT_CODE
    assert "the test work did not finish within 1 s" in stuck_output
    assert "reported" in stuck_output  # the abandoned LOAD reports itself to the sweeper
    assert (prompt.returncode, prompt_output.strip()) == (0, "survived")


def test_each_job_gets_its_own_deadline_from_the_one_watchdog() -> None:
    # Many prompt jobs first (each re-arms the watchdog), then one that overruns.
    quick_then_stuck = guarded_python(
        "pass",
        "for _ in range(1000):\n"
        "            with guarded('a quick job', 1): pass\n"
        f"        time.sleep({1 + ABANDON_GRACE_S + 1}); print('idle is fine', flush=True)\n"
        "        with guarded('the stuck job', 1): time.sleep(3600)",
    )

    output, _ = quick_then_stuck.communicate(timeout=TIMEOUT_S)

    assert quick_then_stuck.returncode == ABANDONED_EXIT_CODE
    assert "idle is fine" in output
    assert "the stuck job did not finish within 1 s" in output
    assert "a quick job did not finish" not in output
