"""What a daemon killed with SIGKILL leaves of its embedded Ray, and the next start.

Only the daemon's own process is killed (as the OOM killer or ``kill -9 PID``
would): Ray's processes are its children and live on, some for minutes. The
next daemon on the same data folder must end them, remove the dead one's Ray
session dir and say so in its log.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from tests.chaos.conftest import DaemonFactory
from tests.chaos.processes import session_processes
from tests.chaos.workload import eventually

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_the_next_start_ends_what_a_daemon_killed_with_sigkill_left_of_its_ray(
    daemons: DaemonFactory,
) -> None:
    daemon = daemons()
    daemon.start()
    first = daemon.session
    assert daemon._proc is not None
    daemon._proc.send_signal(signal.SIGKILL)
    daemon._proc.wait()
    killed_at = time.monotonic()
    left = [p for p in session_processes(first) if p.pid != first]
    assert left, "nothing of the daemon's Ray outlived it"
    # The daemon's Ray temp dir (RAY_TMPDIR) holds its session dirs.
    sessions = set(Path(daemon._ray_tmp, "ray").glob("session_2*"))

    daemon.start()
    # Well before Ray's own orphans would notice (a minute or two).
    gone = eventually(lambda: not session_processes(first), 10.0)
    after_s = time.monotonic() - killed_at
    still = session_processes(first)
    print(f"\n[ray leftovers] left={len(left)} still_running={len(still)} after_s={after_s:.1f}")
    assert gone, f"{len(still)} process(es) of the killed daemon still run: {still}"
    log = daemon.log_path.read_text().split("=== life 2 ===", 1)[1]
    (line,) = [line for line in log.splitlines() if "died: killed" in line]
    assert f"(pid {first})" in line, line
    assert sessions and not any(s.exists() for s in sessions), sessions
    assert all(str(s) in line for s in sessions), line
