"""Lower the CPU priority (raise the nice value) of this whole process.

Executors run it: on a small machine, evaluation (the daemon, automation
actors, the timer) keeps the CPU when actions compete for it. Measured on
this 2-core machine, publish-to-firing p99 with executors at nice 0 -> 10:
~30-41 -> ~28-34 ms at 2,000 events/s with 1 in 10 firing, ~83 -> ~63 ms at
1,000 events/s with every event firing.

On Linux a nice value belongs to each thread, and Ray has started threads
before an actor's constructor runs: every thread of the process is set, and
threads started later inherit it from the thread that starts them.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)


def lower_priority(nice: int) -> None:
    """Raise every thread's nice value to ``nice`` (never lower it); 0 leaves it."""
    if nice <= 0:
        return
    try:
        threads = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:  # not Linux: the process-wide call
        threads = [0]
    for tid in threads:
        try:
            if os.getpriority(os.PRIO_PROCESS, tid) < nice:
                os.setpriority(os.PRIO_PROCESS, tid, nice)
        except OSError as exc:  # a thread that just ended, or a refusal: keep going
            log.debug("could not set nice %d on thread %d: %s", nice, tid, exc)
