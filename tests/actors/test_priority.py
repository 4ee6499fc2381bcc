"""Executors lower their own CPU priority: every thread of the process."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def _run(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.strip()


def test_every_thread_already_running_gets_the_nice_value_and_new_ones_inherit_it() -> None:
    out = _run(
        """
        import os, threading
        from marmot.actors.priority import lower_priority

        started = threading.Event()
        stop = threading.Event()

        def wait():
            started.set()
            stop.wait()

        early = threading.Thread(target=wait)
        early.start()
        started.wait()
        target = min(19, os.getpriority(os.PRIO_PROCESS, 0) + 3)  # above whatever we run at
        lower_priority(target)
        niceness = {}
        def own():
            return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

        later = threading.Thread(target=lambda: niceness.update(later=own()))
        later.start()
        later.join()
        niceness["main"] = own()
        niceness["early"] = os.getpriority(os.PRIO_PROCESS, early.native_id)
        lower_priority(target - 1)  # never lowers it back
        niceness["after_lower"] = own()
        stop.set()
        early.join()
        print(sorted((name, value - target) for name, value in niceness.items()))
        """
    )
    # Every thread at the target: the difference is zero.
    assert out == "[('after_lower', 0), ('early', 0), ('later', 0), ('main', 0)]"


def test_zero_leaves_the_priority_alone() -> None:
    assert (
        _run(
            """
        import os
        from marmot.actors.priority import lower_priority
        before = os.getpriority(os.PRIO_PROCESS, 0)
        lower_priority(0)
        print(os.getpriority(os.PRIO_PROCESS, 0) == before)
        """
        )
        == "True"
    )
