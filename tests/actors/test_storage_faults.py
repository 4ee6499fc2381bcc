"""The store on a real disk that fills up, a data folder deleted, replaced or
read-only, and the data folder's lock, without Ray.

Full disks are small tmpfs mounts (the tests run as root) filled to the last
byte; read-only ones are remounted read-only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from marmot.actors.datadir import LOCK_FILE, DataDir
from marmot.actors.router import Router
from marmot.actors.storage_watch import StorageWatch
from marmot.actors.store import Store
from marmot.actors.wire import Outcome
from marmot.config import RouterConfig
from marmot.engine.clock import ManualClock
from marmot.engine.errors import DataDirInUse, StorageFailed, StorageFull, StorageLost
from marmot.engine.models.events import Event
from marmot.engine.timestamps import from_us
from tests.actors.test_executor import Harness, Scripted, automation, job_blob
from tests.disk import fill, mounted_tmpfs, remount_read_only
from tests.engine.factories import event
from tests.integration.harness import wait_for

PAYLOAD = "x" * 20_000  # a few events need new pages in the WAL


def bulky(n: int) -> Event:
    e = event("disk.filled", n)
    return e.model_copy(update={"payload": {"blob": PAYLOAD}, "received": e.occurred})


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    with mounted_tmpfs(tmp_path / "disk", "4m") as disk:
        yield disk


def append_until_refused(store: Store) -> StorageFull:
    for n in range(500):
        try:
            store.events.append([bulky(n)])
        except StorageFull as exc:
            return exc
    raise AssertionError("the full disk took 500 appends")


# -- a full disk --------------------------------------------------------------------------


def test_a_full_disk_refuses_writes_with_storage_full_until_space_is_freed(
    small_disk: Path,
) -> None:
    with Store.open(small_disk / "data" / "marmot.db") as store:
        filler = fill(small_disk)
        refused = append_until_refused(store)
        assert str(small_disk / "data") in refused.message
        assert refused.is_retryable
        assert isinstance(store.db.fault, StorageFull)
        with pytest.raises(StorageFull):
            store.db.check_writable()

        filler.unlink()
        store.db.check_writable()
        assert store.db.fault is None
        assert store.events.append([bulky(1000)])


def test_wal_checkpoints_go_on_after_a_full_disk(small_disk: Path) -> None:
    db = small_disk / "data" / "marmot.db"
    with Store.open(db) as store:
        # Frames in the WAL that the database file must grow to take.
        for n in range(40):
            store.events.append([bulky(n)])
        size_before = db.stat().st_size
        filler = fill(small_disk)
        store.db.start_checkpointer(interval_s=0.05)
        wait_for(lambda: isinstance(store.db.fault, StorageFull), 10, "a failed checkpoint")

        filler.unlink()
        wait_for(lambda: db.stat().st_size > size_before + 40 * 20_000, 20, "a checkpoint")
        wait_for(lambda: store.db.fault is None, 5, "the fault to end")


def test_the_daemons_own_events_wait_out_a_full_disk_and_others_are_refused(
    small_disk: Path,
) -> None:
    async def on_outcome(outcome: Outcome) -> None:
        return None

    async def main() -> None:
        store = Store.open(small_disk / "marmot.db")
        router = Router(store.events, RouterConfig(), on_outcome, ManualClock(from_us(10**7)))
        try:
            filler = fill(small_disk)
            own = [bulky(n) for n in range(20)]
            held = asyncio.create_task(router.submit(own, backpressure=False))
            with pytest.raises(StorageFull):
                await router.submit([bulky(n) for n in range(100, 120)])
            await asyncio.sleep(0.5)
            assert not held.done(), "the daemon's own events were refused"

            filler.unlink()
            seqs = await asyncio.wait_for(held, 10)
            assert len(seqs) == 20
            assert store.events.known_ids([e.id for e in own]) == {e.id for e in own}
        finally:
            await router.close()
            store.close()

    asyncio.run(main())


def test_an_executor_records_its_claims_once_space_is_back(small_disk: Path) -> None:
    async def main() -> None:
        harness = Harness(small_disk, Scripted(), store=Store.open(small_disk / "marmot.db"))
        try:
            filler = fill(small_disk)
            for n in range(30):  # fill what the WAL had left too
                try:
                    harness.store.events.append([bulky(n)])
                except StorageFull:
                    break
            claiming = asyncio.create_task(harness.execute(job_blob(automation("do-nothing"))))
            await asyncio.sleep(0.5)
            assert not claiming.done(), "the claim failed instead of waiting"

            filler.unlink()
            assert await asyncio.wait_for(claiming, 10) == ["prefect.automation.action.triggered"]
            assert len(harness.store.actions.read()) == 1
        finally:
            harness.store.close()

    asyncio.run(main())


def test_opening_the_store_on_a_full_disk_names_the_folder(small_disk: Path) -> None:
    Store.open(small_disk / "data" / "marmot.db").close()
    filler = fill(small_disk)
    try:
        with pytest.raises(StorageFull, match=f"{small_disk / 'data'} is full"):
            Store.open(small_disk / "data" / "marmot.db")
    finally:
        filler.unlink()


# -- a data folder deleted, replaced or read-only ----------------------------------------


def test_a_deleted_data_folder_fails_every_write_with_storage_lost(tmp_path: Path) -> None:
    with Store.open(tmp_path / "data" / "marmot.db") as store:
        store.events.append([bulky(0)])
        shutil.rmtree(tmp_path / "data")

        with pytest.raises(StorageLost, match="was deleted"):
            store.events.append([bulky(1)])
        assert isinstance(store.db.fault, StorageLost)
        (tmp_path / "data").mkdir()  # a new folder does not bring it back
        with pytest.raises(StorageLost):
            store.db.check_writable()


def test_a_replaced_data_folder_is_noticed_by_the_watch(tmp_path: Path) -> None:
    lost: list[StorageLost] = []

    async def on_lost(exc: StorageLost) -> None:
        lost.append(exc)

    async def main() -> None:
        with Store.open(tmp_path / "data" / "marmot.db") as store:
            watch = StorageWatch(store.db, on_lost)
            assert await watch.check()
            (tmp_path / "data").rename(tmp_path / "old")
            shutil.copytree(tmp_path / "old", tmp_path / "data")

            assert not await watch.check()
            assert "was replaced" in lost[0].message
            assert watch.fault is lost[0]

    asyncio.run(main())


def test_a_read_only_data_folder_is_refused_naming_it(tmp_path: Path) -> None:
    with mounted_tmpfs(tmp_path / "ro", "1m") as disk:
        Store.open(disk / "data" / "marmot.db").close()
        remount_read_only(disk)
        with pytest.raises(StorageFailed, match=f"data folder {disk / 'data'} is read-only"):
            DataDir.claim(disk / "data")
        with pytest.raises(StorageFailed, match=f"{disk / 'data'} is read-only"):
            Store.open(disk / "data" / "marmot.db")


# -- one daemon per data folder ------------------------------------------------------------

HOLDER = """
import sys, time
from pathlib import Path
from marmot.actors.datadir import DataDir
held = DataDir.claim(Path(sys.argv[1]))
if len(sys.argv) > 2:  # start a stand-in for a Ray process, marked as the daemon's Ray
    import subprocess
    with held.marking_ray() as marker:
        subprocess.Popen([sys.executable, sys.argv[3], "--session-dir=" + sys.argv[2]])
    while not held.record_ray(marker):
        time.sleep(0.05)
print("held", flush=True)
time.sleep(600)
"""


def hold(folder: Path, session: Path | None = None) -> subprocess.Popen[str]:
    """A process that claims ``folder`` (and, given a Ray ``session`` dir, starts a
    marked stand-in for a Ray process, a script in a ``ray`` folder)."""
    ray: list[str] = []
    if session is not None:
        stand_in = session.parent / "stand_in.py"
        stand_in.write_text("import time\ntime.sleep(600)\n")
        ray = [str(session), str(stand_in)]
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(folder), *ray],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline() == "held\n"
    return holder


def test_a_second_claim_is_refused_naming_the_holder(tmp_path: Path) -> None:
    holder = hold(tmp_path / "data")
    try:
        with pytest.raises(DataDirInUse) as refused:
            DataDir.claim(tmp_path / "data")
        message = refused.value.message
        assert str(tmp_path / "data") in message
        assert f"pid {holder.pid}" in message and "DataDir.claim" in message
    finally:
        holder.kill()
        holder.wait()


def test_a_holder_killed_with_sigkill_leaves_no_lock_and_its_ray_is_cleaned_up(
    tmp_path: Path,
) -> None:
    session = tmp_path / "ray" / "session_2026-01-01_00-00-00_000000_1"
    session.mkdir(parents=True)
    holder = hold(tmp_path / "data", session)
    (stand_in,) = _children(holder.pid)
    try:
        record = json.loads((tmp_path / "data" / LOCK_FILE).read_text())
        assert record["pid"] == holder.pid
        assert record["ray"]["session_dir"] == str(session)
        assert [pid for pid, _ in record["ray"]["pids"]] == [stand_in]

        holder.send_signal(signal.SIGKILL)
        holder.wait()
        assert _is_running(stand_in), "the stand-in for Ray died with its daemon"

        claimed = DataDir.claim(tmp_path / "data")
        try:
            cleaned = claimed.clean_leftovers()
            assert cleaned is not None
            assert cleaned.owner_pid == holder.pid and cleaned.killed == [stand_in]
            assert not _is_running(stand_in)
            assert not session.exists()
            assert f"pid {holder.pid}" in cleaned.describe()
        finally:
            claimed.release()
        # A clean release leaves nothing for the next one to clean.
        again = DataDir.claim(tmp_path / "data")
        try:
            assert again.clean_leftovers() is None
        finally:
            again.release()
    finally:
        for pid in (holder.pid, stand_in):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        holder.wait()


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(f"/proc/{entry.name}/stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _is_running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"
