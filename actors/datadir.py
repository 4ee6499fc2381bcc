"""The data folder's owner: one daemon at a time, and what a dead one left behind.

``DataDir.claim(folder)`` takes an exclusive ``flock`` on ``marmot.lock`` in the
folder (the OS drops it when the holder dies, so a kill -9 never leaves a
stale lock) and writes who holds it into that file; a second daemon is
refused with the folder, the holder's pid and its command line. The record
also names the embedded Ray the holder started (a marker every Ray process
inherits in its environment, their pids and the session dir): Ray's
processes outlive a daemon killed with SIGKILL, so the next daemon on the
folder kills what a dead one left and removes its session dir.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import shutil
import signal
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from marmot.actors.store.faults import storage_failure
from marmot.engine.errors import DataDirInUse, StorageFailed

__all__ = ["LOCK_FILE", "RAY_MARKER_ENV", "DataDir", "Leftovers"]

log = logging.getLogger(__name__)

LOCK_FILE = "marmot.lock"
# Set while the embedded Ray starts, so that its processes (and the workers
# they start) carry it: this is how a later daemon finds them.
RAY_MARKER_ENV = "MARMOT_RAY_OWNER"
# How long leftover processes get to vanish after SIGKILL.
_KILL_WAIT_S = 5.0
_SESSION_DIR = re.compile(r"--session[-_]dir=(\S+)")


@dataclass(frozen=True, slots=True)
class Leftovers:
    """What a dead daemon left and the next one removed."""

    owner_pid: int
    killed: list[int]
    session_dir: str | None

    def describe(self) -> str:
        """One line for the log."""
        pids = ", ".join(map(str, self.killed)) or "none"
        removed = f"; removed its Ray session dir {self.session_dir}" if self.session_dir else ""
        return (
            f"the daemon that held this data folder (pid {self.owner_pid}) died: killed "
            f"{len(self.killed)} Ray process(es) it left (pids {pids}){removed}"
        )


class DataDir:
    """This process's hold on a data folder: the lock, and the record in it."""

    def __init__(self, folder: Path, fd: int, previous: dict[str, Any]) -> None:
        self.folder = folder
        self._fd: int | None = fd
        # What the last holder recorded (empty when it stopped cleanly or never wrote).
        self.previous = previous
        self._record: dict[str, Any] = {}

    @property
    def lock_path(self) -> Path:
        """The lock file."""
        return self.folder / LOCK_FILE

    @classmethod
    def claim(cls, folder: Path) -> DataDir:
        """Take ``folder`` (created if missing) for this process, for as long as it lives
        or until ``release``.

        Raises ``DataDirInUse`` naming the folder and the process that holds it, and
        ``StorageFailed`` (``StorageFull`` on a full disk) naming the folder when it
        cannot be written.
        """
        try:
            folder.mkdir(parents=True, exist_ok=True)
            # Not inherited by child processes (PEP 446): Ray's processes, which can
            # outlive the daemon, must not keep its lock.
            fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise _failure(exc, folder) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise _in_use(folder) from None
        except OSError as exc:
            os.close(fd)
            raise _failure(exc, folder) from exc
        held = cls(folder, fd, _read_record(fd))
        try:
            held._write(
                {
                    "pid": os.getpid(),
                    "process_start": _start_time(os.getpid()),
                    "command": _command(os.getpid()),
                }
            )
        except OSError as exc:
            held.release()
            raise _failure(exc, folder) from exc
        return held

    # -- the embedded Ray -----------------------------------------------------------

    @contextlib.contextmanager
    def marking_ray(self) -> Iterator[str]:
        """Mark the processes started inside the block (the embedded Ray) with a
        fresh marker in their environment; yields it."""
        marker = uuid.uuid4().hex
        before = os.environ.get(RAY_MARKER_ENV)
        os.environ[RAY_MARKER_ENV] = marker
        try:
            yield marker
        finally:
            if before is None:
                os.environ.pop(RAY_MARKER_ENV, None)
            else:
                os.environ[RAY_MARKER_ENV] = before

    def record_ray(self, marker: str) -> int:
        """Record the processes carrying ``marker`` (the embedded Ray, once started)
        and their session dir in the lock file; returns how many there are."""
        found = [p for p in _ray_processes(marker) if p != os.getpid()]
        if not found:
            return 0  # Ray was running already: not this daemon's to clean up
        session_dir = next(filter(None, (_session_dir(p) for p in found)), None)
        if session_dir is not None:  # agents and workers that renamed themselves too
            found = [p for p in _ray_processes(marker, session_dir) if p != os.getpid()]
        self._write(
            {
                **self._record,
                "ray": {
                    "marker": marker,
                    "session_dir": session_dir,
                    "pids": [[pid, _start_time(pid)] for pid in found],
                },
            }
        )
        return len(found)

    def clean_leftovers(self) -> Leftovers | None:
        """Kill the Ray processes the last holder left, if it died, and remove its Ray
        session dir; returns what was done (None: nothing was left).

        Its Ray processes are those carrying its marker, those it recorded (same
        pid and start time) and those with files open in its session dir: Ray's
        agents and workers rename themselves (``ray::DashboardAgent``), which can
        wipe the environment /proc shows.
        """
        previous, ray = self.previous, self.previous.get("ray")
        owner = previous.get("pid")
        if not isinstance(ray, dict) or not isinstance(owner, int) or owner == os.getpid():
            return None
        started = _start_time(owner)
        if started is not None and started == previous.get("process_start"):
            return None  # alive, and it released the folder: its Ray is its own business
        session_dir = ray.get("session_dir")
        # Only what Ray names a session dir: the record is a file anyone could edit.
        if not (isinstance(session_dir, str) and Path(session_dir).name.startswith("session_")):
            session_dir = None
        pids = set(_ray_processes(str(ray.get("marker") or ""), session_dir))
        for pid, began in ray.get("pids") or []:
            if isinstance(pid, int) and began is not None and _start_time(pid) == began:
                pids.add(pid)
        pids.discard(os.getpid())
        killed = sorted(pid for pid in pids if _kill(pid))
        _wait_gone(killed, _KILL_WAIT_S)
        removed = None
        if session_dir is not None and Path(session_dir).is_dir():
            shutil.rmtree(session_dir, ignore_errors=True)
            removed = session_dir
        if not killed and removed is None:
            return None
        return Leftovers(owner, killed, removed)

    # -- the record -----------------------------------------------------------------

    def _write(self, record: dict[str, Any]) -> None:
        assert self._fd is not None, "the data folder was released"
        data = json.dumps(record, sort_keys=True).encode()
        os.lseek(self._fd, 0, os.SEEK_SET)
        os.ftruncate(self._fd, 0)
        os.write(self._fd, data)
        self._record = record

    def release(self) -> None:
        """Empty the record (a clean stop leaves nothing to clean up) and let go of
        the lock."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)
        except OSError as exc:  # the record stays; the next daemon checks the pids
            log.warning("could not clear %s: %s", self.lock_path, exc)
        finally:
            os.close(fd)  # drops the flock


def _failure(exc: OSError, folder: Path) -> StorageFailed:
    failure = storage_failure(exc, folder)
    assert failure is not None  # every OSError is one
    return failure


def _in_use(folder: Path) -> DataDirInUse:
    lock = folder / LOCK_FILE
    pid = _lock_holder(lock)
    recorded: dict[str, Any] = {}
    with contextlib.suppress(OSError):
        fd = os.open(lock, os.O_RDONLY)
        try:
            recorded = _read_record(fd)
        finally:
            os.close(fd)
    if pid is None and isinstance(recorded.get("pid"), int):
        pid = recorded["pid"]
    command = (_command(pid) if pid is not None else None) or recorded.get("command")
    holder = "another process" if pid is None else f"pid {pid}"
    if command:
        holder += f" ({command})"
    return DataDirInUse(
        f"the data folder {folder} is in use by another marmot daemon: {holder}; "
        "stop it, or use another data folder",
        details={"folder": str(folder), "pid": pid, "command": command},
    )


def _lock_holder(lock: Path) -> int | None:
    """The pid holding the flock on ``lock``, from /proc/locks (None if not found)."""
    try:
        stat = os.stat(lock)
        with open("/proc/locks") as locks:
            lines = locks.read().splitlines()
    except OSError:
        return None
    device = f"{os.major(stat.st_dev):02x}:{os.minor(stat.st_dev):02x}:{stat.st_ino}"
    for line in lines:
        fields = line.split()
        # "1: FLOCK  ADVISORY  WRITE 1234 00:2a:5678 0 EOF"
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == device:
            with contextlib.suppress(ValueError):
                return int(fields[4])
    return None


def _read_record(fd: int) -> dict[str, Any]:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        data = os.read(fd, 1 << 20)
        record = json.loads(data) if data.strip() else {}
    except (OSError, ValueError):
        return {}  # being written, or not ours: treated as no record
    return record if isinstance(record, dict) else {}


def _proc(pid: int, name: str) -> bytes | None:
    try:
        with open(f"/proc/{pid}/{name}", "rb") as f:
            return f.read()
    except OSError:
        return None


def _start_time(pid: int) -> int | None:
    """When ``pid`` started (clock ticks since boot): a pid and its start time name
    one process, even after the pid is reused."""
    stat = _proc(pid, "stat")
    if stat is None:
        return None
    fields = stat[stat.rindex(b")") + 2 :].split()
    return int(fields[19]) if len(fields) > 19 else None


def _command(pid: int) -> str | None:
    cmdline = _proc(pid, "cmdline")
    if not cmdline:
        return None
    return cmdline.replace(b"\0", b" ").decode(errors="replace").strip() or None


def _ray_processes(marker: str, session_dir: str | None = None) -> list[int]:
    """The live Ray processes (raylet, GCS, agents, ``ray::`` workers) whose
    environment carries ``marker`` or that have a file open in ``session_dir``."""
    needle = f"{RAY_MARKER_ENV}={marker}".encode() if marker else None
    inside = session_dir.rstrip("/") + "/" if session_dir else None
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        if not _is_ray(_command(pid)) or not _alive(pid):
            continue
        environ = _proc(pid, "environ") if needle is not None else None
        if (environ is not None and needle in environ.split(b"\0")) or (
            inside is not None and _has_open_under(pid, inside)
        ):
            found.append(pid)
    return found


def _is_ray(command: str | None) -> bool:
    """Whether a command line is one of Ray's processes: a ``ray::`` title, or a
    program in Ray's package (not, say, ``tail`` reading a Ray log)."""
    words = (command or "").split()
    if not words:
        return False
    if words[0].startswith("ray::"):
        return True
    program = words[0]
    if Path(program).name.startswith("python"):
        program = next((w for w in words[1:] if not w.startswith("-")), "")
    return "/ray/" in program


def _has_open_under(pid: int, prefix: str) -> bool:
    try:
        entries = list(os.scandir(f"/proc/{pid}/fd"))
    except OSError:
        return False
    for entry in entries:
        try:
            if os.readlink(entry.path).startswith(prefix):
                return True
        except OSError:
            continue
    return False


def _session_dir(pid: int) -> str | None:
    command = _command(pid)
    match = _SESSION_DIR.search(command) if command else None
    return match.group(1) if match else None


def _kill(pid: int) -> bool:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    return True


def _wait_gone(pids: list[int], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, killed and not reaped yet, does not)."""
    stat = _proc(pid, "stat")
    return stat is not None and stat[stat.rindex(b")") + 2 :][:1] not in (b"Z", b"X")
