"""``marmot serve`` as a subprocess the fault tests can SIGKILL, with everything it started.

The daemon runs in a session of its own (``start_new_session``). Ray gives its
workers process groups of their own, so a kill of the daemon's process group
would leave actor workers behind: ``kill`` SIGKILLs every process of the
session instead, by pid, and waits until none is left. Each daemon gets its
own Ray temp dir (``RAY_TMPDIR``), short enough for Ray's Unix socket paths.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from marmot.engine.errors import MarmotError
from marmot.transport.client import Client

MARMOT = Path(sys.executable).with_name("marmot")


# Every session and Ray temp dir a DaemonProcess has used in this process, for the
# end-of-session check with ps (conftest.py).
SESSIONS: set[int] = set()
RAY_TEMP_DIRS: set[str] = set()


def survivors() -> list[str]:
    """``ps`` lines of processes of any daemon started here that still run."""
    listing = subprocess.run(
        ["ps", "-eo", "pid=,sid=,stat=,args="], capture_output=True, text=True, check=True
    ).stdout
    found = []
    for line in listing.splitlines():
        pid, sid, stat, *args = line.split(None, 3)
        if stat.startswith("Z") or int(pid) == os.getpid():
            continue
        title = args[0] if args else ""
        if int(sid) in SESSIONS or any(tmp in title for tmp in RAY_TEMP_DIRS):
            found.append(line.strip())
    return found


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True, slots=True)
class Proc:
    """One process as /proc describes it."""

    pid: int
    session: int
    state: str
    title: str


def processes() -> Iterator[Proc]:
    """Every live (non-zombie) process on the machine."""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read().decode(errors="replace")
            with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue  # gone meanwhile
        # The fields after the command name, which may itself hold spaces or ')'.
        fields = stat[stat.rindex(")") + 2 :].split()
        state, session = fields[0], int(fields[3])
        if state in ("Z", "X"):
            continue
        yield Proc(int(entry.name), session, state, cmdline)


def session_processes(session: int) -> list[Proc]:
    """The live processes of a session."""
    return [p for p in processes() if p.session == session]


def ray_workers(session: int, actor_class: str) -> list[Proc]:
    """The worker processes of one Ray actor class in a daemon's session
    (their title is ``ray::ActorClass`` or ``ray::ActorClass.method``)."""
    prefix = f"ray::{actor_class}"
    return [
        p
        for p in session_processes(session)
        if p.title == prefix or p.title.startswith(prefix + ".")
    ]


def kill_pids(pids: list[int], signum: int = signal.SIGKILL) -> None:
    """Send ``signum`` (SIGKILL) to each pid, ignoring those already gone."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


def wait_for_restart(session: int, actor: str, old: set[int], timeout_s: float = 30.0) -> float:
    """Seconds until the actor class has as many workers as ``old`` again, none of
    them killed (Ray restarted the killed ones); fails after ``timeout_s``."""
    began = time.monotonic()
    while time.monotonic() - began < timeout_s:
        workers = {p.pid for p in ray_workers(session, actor)}
        if len(workers) >= len(old) and workers != old:
            return time.monotonic() - began
        time.sleep(0.05)
    raise AssertionError(f"Ray did not restart the {actor} workers within {timeout_s} s")


@dataclass
class DaemonProcess:
    """One data dir and its ports; ``start`` runs a daemon life on them, ``kill`` ends it.

    The same ports and data dir are used by every life, so clients and
    publishers reconnect to the restarted daemon by themselves.
    """

    data_dir: Path
    settings: dict[str, Any] = field(default_factory=dict)
    # The daemon's hash seed. Pinned by default: with a random one, automations
    # with two or more names in a set field lose their checkpoint on restart
    # (test_restart_faults.py::test_a_checkpoint_survives_a_restart_with_another_hash_seed),
    # which would make every restart test fail at random instead of finding
    # other faults.
    hash_seed: str = "0"
    rpc_port: int = field(default_factory=free_port)
    ingest_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    lives: int = 0
    kills: int = 0
    startup_s: list[float] = field(default_factory=list)
    _proc: subprocess.Popen[bytes] | None = None
    _sessions: list[int] = field(default_factory=list)
    _ray_tmp: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="mc-", dir="/tmp"))
    _output: IO[bytes] | None = None

    @property
    def rpc_url(self) -> str:
        return f"tcp://127.0.0.1:{self.rpc_port}"

    @property
    def ingest_url(self) -> str:
        return f"tcp://127.0.0.1:{self.ingest_port}"

    @property
    def db_path(self) -> Path:
        return self.data_dir / "marmot.db"

    @property
    def log_path(self) -> Path:
        return self.data_dir.parent / f"{self.data_dir.name}-daemon.log"

    @property
    def session(self) -> int:
        """The session id of the running life (its leader's pid)."""
        assert self._proc is not None, "the daemon is not running"
        return self._proc.pid

    @property
    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _config(self) -> Path:
        config = {
            "data": {"dir": str(self.data_dir), "checkpoint_interval_s": 1.0},
            "ray": {"num_cpus": 2, "object_store_memory_mb": 100},
            "rpc": {"url": self.rpc_url},
            "ingest": {"pull_url": self.ingest_url},
            "http": {"port": self.http_port},
            "executors": {"pool_size": 2, "backoff_base_s": 0.05, "backoff_max_s": 0.5},
            "log_level": "INFO",
        }
        for dotted, value in self.settings.items():
            section, _, key = dotted.rpartition(".")
            target = config.setdefault(section, {}) if section else config
            assert isinstance(target, dict)
            target[key] = value
        path = self.data_dir.parent / f"{self.data_dir.name}-marmot.yaml"
        path.write_text(json.dumps(config, indent=2))  # JSON is YAML
        return path

    def spawn(self) -> None:
        """Start a daemon life without waiting for it to serve."""
        assert not self.is_running, "a life is already running"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "RAY_TMPDIR": self._ray_tmp,
            "RAY_USAGE_STATS_ENABLED": "0",
            "PYTHONHASHSEED": self.hash_seed,
        }
        for name in ("RAY_ADDRESS", "MARMOT_CONFIG", "MARMOT_DATA_DIR", "MARMOT_RPC_URL"):
            env.pop(name, None)
        if self._output is None:
            self._output = self.log_path.open("ab")
        self._output.write(f"=== life {self.lives + 1} ===\n".encode())
        self._output.flush()
        self._proc = subprocess.Popen(
            [str(MARMOT), "serve", "--config", str(self._config())],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._sessions.append(self._proc.pid)
        SESSIONS.add(self._proc.pid)
        RAY_TEMP_DIRS.add(self._ray_tmp)
        self.lives += 1

    def start(self, timeout_s: float = 90.0) -> float:
        """Start a life and wait until it answers RPC (automations recovered);
        returns the seconds that took."""
        began = time.monotonic()
        self.spawn()
        self.wait_ready(timeout_s, began)
        took = time.monotonic() - began
        self.startup_s.append(took)
        return took

    def wait_ready(self, timeout_s: float, began: float | None = None) -> None:
        """Wait until the running life serves: ``health`` says ``ok`` (while it
        starts, it answers ``ok: false`` until every automation has recovered)."""
        deadline = (began or time.monotonic()) + timeout_s
        with Client(self.rpc_url, timeout_s=1.0) as client:
            while True:
                if not self.is_running:
                    raise AssertionError(f"the daemon exited; see {self.log_path}")
                try:
                    if client.health().get("ok"):
                        return
                except MarmotError:
                    pass
                if time.monotonic() > deadline:
                    raise AssertionError(f"the daemon did not serve within {timeout_s} s")
                time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL the daemon and every process of its session (its embedded Ray)."""
        if self._proc is None:
            return
        session = self._proc.pid
        deadline = time.monotonic() + 30
        while True:
            left = session_processes(session)
            if not left:
                break
            kill_pids([p.pid for p in left])
            if time.monotonic() > deadline:
                raise AssertionError(f"processes of session {session} survive SIGKILL: {left}")
            time.sleep(0.05)
        self._proc.wait(10)
        self._proc = None
        self.kills += 1

    def stop(self, timeout_s: float = 60.0, signum: int = signal.SIGTERM) -> int:
        """Ask for a clean shutdown (checkpoints written) with ``signum``; returns the
        exit code. Whatever is left of the session afterwards is killed."""
        if self._proc is None:
            return 0
        self._proc.send_signal(signum)
        try:
            code = self._proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            code = -1
        session = self._proc.pid
        deadline = time.monotonic() + 5
        while left := session_processes(session):
            # Ray's agents may need a moment to notice their raylet is gone.
            if time.monotonic() > deadline:
                kill_pids([p.pid for p in left])
            time.sleep(0.1)
        self._proc = None
        return code

    def leftovers(self) -> list[Proc]:
        """Processes of any life of this daemon still running (should be none)."""
        sessions = set(self._sessions)
        return [p for p in processes() if p.session in sessions or self._ray_tmp in p.title]

    def cleanup(self) -> list[Proc]:
        """Kill whatever of this daemon is still running and remove its Ray temp dir;
        returns the processes that had to be killed after the daemon was down."""
        if self._proc is not None and self._proc.poll() is None:
            self.kill()
            self.kills -= 1  # not a fault injected by a test
        self._proc = None
        strays = self.leftovers()
        deadline = time.monotonic() + 30
        while left := self.leftovers():
            kill_pids([p.pid for p in left])
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        if self._output is not None:
            self._output.close()
            self._output = None
        shutil.rmtree(self._ray_tmp, ignore_errors=True)
        return strays
