"""Notification blocks in the SQLite store, against a real database file."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from marmot.actors.store import SCHEMA_VERSION, Store
from marmot.actors.store.schema import MIGRATIONS
from marmot.engine.clock import ManualClock
from marmot.engine.errors import Conflict, NotFound, ValidationFailed
from marmot.engine.models.automations import Automation
from marmot.engine.models.blocks import OBFUSCATED, BlockDocument, Webhook

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
SLACK_URL = "https://hooks.slack.com/services/T0/B0/very-secret-token"
PASSWORD = "hunter2-but-longer"
TOKEN = "Bearer top-secret-header-value"


def FakeClock(now: datetime = T0) -> ManualClock:
    """A settable clock for the store's created/updated stamps."""
    return ManualClock(now)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "marmot.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[Store]:
    with Store.open(db_path, clock=FakeClock()) as opened:
        yield opened


def block(slug: str, name: str, **data: Any) -> BlockDocument:
    return BlockDocument.model_validate({"block_type_slug": slug, "name": name, "data": data})


def slack(name: str = "ops") -> BlockDocument:
    return block("slack-webhook", name, url=SLACK_URL)


def email(name: str = "on-call") -> BlockDocument:
    return block(
        "email",
        name,
        smtp_server="smtp.example.com",
        smtp_type="STARTTLS",
        username="marmot",
        password=PASSWORD,
        email_from="marmot@example.com",
        email_to=["a@example.com", "b@example.com"],
    )


def webhook(name: str = "hook") -> BlockDocument:
    return block(
        "webhook",
        name,
        method="PUT",
        url="https://hooks.example.com/secret-path",
        headers={"Authorization": TOKEN},
    )


def _raw_rows(path: Path, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def test_created_block_reads_back_with_secrets_masked(store: Store) -> None:
    created = store.blocks.create(slack())

    read = store.blocks.read(created.id)

    assert read.id == created.id
    assert read.name == "ops" and read.block_type_slug == "slack-webhook"
    assert read.created == read.updated == T0
    assert read.public_view()["data"]["url"] == OBFUSCATED
    assert read.data.secret_fields() == {"url": OBFUSCATED}
    assert SLACK_URL not in repr(read)
    assert created.public_view() == read.public_view()


def test_read_with_secrets_returns_the_real_values(store: Store) -> None:
    created = store.blocks.create(webhook())

    revealed = store.blocks.read(created.id, include_secrets=True)

    assert isinstance(revealed.data, Webhook)
    assert revealed.data.url.get_secret_value() == "https://hooks.example.com/secret-path"
    assert revealed.data.headers.get_secret_value() == {"Authorization": TOKEN}
    assert revealed.data.method == "PUT"


def test_a_block_read_again_with_secrets_is_parsed_once_and_never_stale(
    store: Store, db_path: Path
) -> None:
    created = store.blocks.create(webhook())
    first = store.blocks.read(created.id, include_secrets=True)

    assert store.blocks.read(created.id, include_secrets=True) is first  # no second parse

    # Deleted, it is gone for the reader too; created again under its id (at the
    # same time on this clock) with other content, the new content is read.
    store.blocks.delete(created.id)
    with pytest.raises(NotFound):
        store.blocks.read(created.id, include_secrets=True)
    again = block("webhook", "hook", url="https://hooks.example.com/other-path")
    store.blocks.create(again.model_copy(update={"id": created.id}))
    read = store.blocks.read(created.id, include_secrets=True)
    assert read.data.url.get_secret_value() == "https://hooks.example.com/other-path"  # type: ignore[union-attr]

    # Secrets changed under it by another process are read too.
    conn = sqlite3.connect(db_path)
    with conn:
        conn.execute(
            "UPDATE block_secrets SET data = ? WHERE block_id = ?",
            ('{"url": "https://hooks.example.com/third-path"}', str(created.id)),
        )
    conn.close()
    read = store.blocks.read(created.id, include_secrets=True)
    assert read.data.url.get_secret_value() == "https://hooks.example.com/third-path"  # type: ignore[union-attr]


def test_secrets_live_apart_from_the_public_data(store: Store, db_path: Path) -> None:
    for b in (slack(), email(), webhook()):
        store.blocks.create(b)

    public = " ".join(row[0] for row in _raw_rows(db_path, "SELECT data FROM blocks"))
    secret = " ".join(row[0] for row in _raw_rows(db_path, "SELECT data FROM block_secrets"))

    for value in (SLACK_URL, PASSWORD, TOKEN, "secret-path"):
        assert value not in public
        assert value in secret
    # The public data still says which secrets are set (and which header keys).
    assert '"Authorization": "********"' in public


def test_masked_views_hide_every_secret_field(store: Store) -> None:
    store.blocks.create(email())
    store.blocks.create(webhook())

    views = [b.public_view() for b in store.blocks.list()]

    by_type = {v["block_type_slug"]: v["data"] for v in views}
    assert by_type["email"]["password"] == OBFUSCATED
    assert by_type["email"]["username"] == "marmot"
    assert by_type["email"]["email_to"] == ["a@example.com", "b@example.com"]
    assert by_type["webhook"]["url"] == OBFUSCATED
    assert by_type["webhook"]["headers"] == {"Authorization": OBFUSCATED}
    assert PASSWORD not in str(views) and TOKEN not in str(views)


def test_email_without_a_password_stores_none(store: Store) -> None:
    relay = block(
        "email",
        "relay",
        smtp_server="relay",
        smtp_type="none",
        email_to="x@example.com",
        email_from="marmot@example.com",
    )
    created = store.blocks.create(relay)

    read = store.blocks.read(created.id, include_secrets=True)

    assert read.public_view()["data"]["password"] is None
    assert read.public_view()["data"]["smtp_type"] == "INSECURE"
    assert read.data.secret_fields() == {}


def test_read_by_name_finds_the_block_of_that_type(store: Store) -> None:
    s = store.blocks.create(slack("ops"))
    t = store.blocks.create(block("ms-teams-webhook", "ops", url="https://teams.example/x"))

    assert store.blocks.read_by_name("slack-webhook", "ops").id == s.id
    assert store.blocks.read_by_name("ms-teams-webhook", "ops").id == t.id
    with pytest.raises(NotFound, match="no webhook block named 'ops'"):
        store.blocks.read_by_name("webhook", "ops")


def test_list_blocks_sorts_by_type_and_name_and_filters_by_type(store: Store) -> None:
    store.blocks.create(slack("zeta"))
    store.blocks.create(slack("alpha"))
    store.blocks.create(webhook("mid"))
    store.blocks.create(email("mail"))

    everything = [(b.block_type_slug, b.name) for b in store.blocks.list()]
    slacks = [b.name for b in store.blocks.list("slack-webhook")]

    assert everything == [
        ("email", "mail"),
        ("slack-webhook", "alpha"),
        ("slack-webhook", "zeta"),
        ("webhook", "mid"),
    ]
    assert slacks == ["alpha", "zeta"]
    assert store.blocks.list("ms-teams-webhook") == []


def test_a_name_is_unique_per_type(store: Store) -> None:
    store.blocks.create(slack("ops"))

    with pytest.raises(Conflict, match="slack-webhook 'ops'"):
        store.blocks.create(slack("ops"))
    store.blocks.create(webhook("ops"))  # another type may use the name

    assert len(store.blocks.list()) == 2


def test_an_id_cannot_be_created_twice(store: Store) -> None:
    first = store.blocks.create(slack("one"))
    again = BlockDocument.model_validate(
        {"id": str(first.id), "block_type_slug": "webhook", "name": "two", "data": {"url": "u"}}
    )

    with pytest.raises(Conflict, match=str(first.id)):
        store.blocks.create(again)


def test_a_masked_secret_is_refused(store: Store) -> None:
    copied = block("slack-webhook", "copy", url=OBFUSCATED)

    with pytest.raises(ValidationFailed, match="url must hold the real secret"):
        store.blocks.create(copied)
    assert store.blocks.list() == []


def test_delete_removes_the_block_and_its_secrets(store: Store, db_path: Path) -> None:
    kept = store.blocks.create(slack("kept"))
    gone = store.blocks.create(email("gone"))

    store.blocks.delete(gone.id)

    with pytest.raises(NotFound):
        store.blocks.read(gone.id)
    assert [b.id for b in store.blocks.list()] == [kept.id]
    assert _raw_rows(db_path, "SELECT block_id FROM block_secrets") == [(str(kept.id),)]
    with pytest.raises(NotFound, match=str(gone.id)):
        store.blocks.delete(gone.id)


def test_unknown_id_is_not_found(store: Store) -> None:
    missing = uuid.uuid4()

    with pytest.raises(NotFound, match=str(missing)):
        store.blocks.read(missing)
    with pytest.raises(NotFound):
        store.blocks.read(missing, include_secrets=True)


def test_blocks_survive_reopening(db_path: Path) -> None:
    with Store.open(db_path) as first:
        created = first.blocks.create(webhook())

    with Store.open(db_path) as second:
        read = second.blocks.read(created.id, include_secrets=True)

    assert read.data.secret_fields() == webhook().data.secret_fields()


def test_a_version_1_database_is_upgraded_and_keeps_its_automations(db_path: Path) -> None:
    # Build the file exactly as a Marmot with only the first migration left it.
    db_path.parent.mkdir(parents=True)
    conn = sqlite3.connect(db_path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("BEGIN")
    conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    MIGRATIONS[0](conn)
    conn.execute("INSERT INTO schema_version VALUES (1)")
    a = Automation.model_validate(
        {"name": "old", "trigger": {"type": "event", "expect": ["x"]}, "actions": []}
    )
    stamp = int(T0.timestamp() * 1_000_000)
    conn.execute(
        "INSERT INTO automations VALUES (?, ?, 1, ?, ?, ?, 1)",
        (str(a.id), a.name, a.model_dump_json(), stamp, stamp),
    )
    conn.execute("COMMIT")
    conn.close()

    with Store.open(db_path, clock=FakeClock(T0 + timedelta(days=1))) as store:
        assert store.db.schema_version() == SCHEMA_VERSION >= 2
        assert store.automations.read(a.id).automation == a
        created = store.blocks.create(slack())
        assert store.blocks.read(created.id).created == T0 + timedelta(days=1)
