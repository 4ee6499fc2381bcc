"""Incidents in the store: recorded once per action, listed, resolved."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from uuid import UUID

import pytest

from marmot.actors.store import Store
from marmot.engine.errors import NotFound

AUTOMATION = UUID("0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d")
FIRING = UUID("1b2c3d4e-5f6a-4b7c-8d9e-0f1a2b3c4d5e")


def record(store: Store, key: str, title: str = "db down") -> UUID:
    return store.incidents.record(
        key=key,
        automation_id=AUTOMATION,
        firing_id=FIRING,
        event_id=None,
        title=title,
        severity="high",
        summary="",
    ).id


def test_an_action_key_records_one_incident(tmp_path: Path) -> None:
    with Store.open(tmp_path / "m.db") as store:
        first = record(store, f"{FIRING}:0")
        again = record(store, f"{FIRING}:0", title="a different title")
        assert first == again
        (incident,) = store.incidents.list()
        assert (incident.title, incident.status) == ("db down", "open")


def test_list_filters_and_resolve(tmp_path: Path) -> None:
    with Store.open(tmp_path / "m.db") as store:
        a = record(store, "k:0")
        b = record(store, "k:1")
        store.incidents.set_status(a, "resolved")
        assert [i.id for i in store.incidents.list(status="open")] == [b]
        assert [i.id for i in store.incidents.list(status="resolved")] == [a]
        assert len(store.incidents.list(automation_id=AUTOMATION)) == 2
        assert store.incidents.list(automation_id=FIRING) == []
        with pytest.raises(NotFound):
            store.incidents.read(FIRING)
        with pytest.raises(ValueError, match="status must be one of"):
            store.incidents.set_status(a, "closed")


def test_backup_is_a_consistent_copy_and_never_overwrites(tmp_path: Path) -> None:
    with Store.open(tmp_path / "m.db") as store:
        record(store, "k:0")
        target = tmp_path / "backups" / "copy.db"
        assert store.db.backup(target) > 0
        with Store.open(target) as copy:
            assert len(copy.incidents.list()) == 1
        with pytest.raises(Exception, match="exists"):
            store.db.backup(target)


def test_wal_checkpoint_empties_the_write_ahead_log(tmp_path: Path) -> None:
    with Store.open(tmp_path / "m.db") as store:
        for k in range(50):
            record(store, f"k:{k}")
        store.db.wal_checkpoint()
        wal = tmp_path / "m.db-wal"
        assert not wal.exists() or wal.stat().st_size == 0
        conn = sqlite3.connect(tmp_path / "m.db")
        assert conn.execute("SELECT COUNT(*) FROM incidents").fetchone()[0] == 50
        conn.close()
