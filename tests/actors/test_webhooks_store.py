"""Webhooks in the SQLite store, against a real database file: names, slugs, rotation,
the in-memory slug map, and the upgrade of a database from before webhooks."""

from __future__ import annotations

import re
import sqlite3
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from marmot.actors.store import SCHEMA_VERSION, Store
from marmot.actors.store.schema import MIGRATIONS
from marmot.engine.clock import ManualClock
from marmot.engine.errors import Conflict, NotFound
from marmot.engine.models.automations import Automation
from marmot.engine.models.webhooks import WebhookSpec

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
TEMPLATE = '{"event": "ping", "resource": {"prefect.resource.id": "r.{{ body.id }}"}}'
SLUG = re.compile(r"^[A-Za-z0-9_-]{22}$")


def FakeClock(now: datetime = T0) -> ManualClock:
    """A settable clock for the store's created/updated stamps."""
    return ManualClock(now)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "marmot.db"


@pytest.fixture
def clock() -> ManualClock:
    return FakeClock()


@pytest.fixture
def store(db_path: Path, clock: ManualClock) -> Iterator[Store]:
    with Store.open(db_path, clock=clock) as opened:
        yield opened


def spec(name: str = "github", **fields: object) -> WebhookSpec:
    return WebhookSpec.model_validate({"name": name, "template": TEMPLATE, **fields})


def test_a_created_webhook_reads_back_by_id_name_and_slug(store: Store) -> None:
    created = store.webhooks.create(spec(description="pushes from GitHub"))
    assert SLUG.match(created.slug)
    assert (created.name, created.description, created.is_enabled) == (
        "github",
        "pushes from GitHub",
        True,
    )
    assert created.template == TEMPLATE
    assert created.created == created.updated == T0
    assert store.webhooks.read(created.id) == created
    assert store.webhooks.read_by_name("github") == created
    assert store.webhooks.for_slug(created.slug) == created


def test_every_webhook_gets_its_own_slug(store: Store) -> None:
    slugs = {store.webhooks.create(spec(f"hook-{n}")).slug for n in range(20)}
    assert len(slugs) == 20


def test_names_are_unique(store: Store) -> None:
    store.webhooks.create(spec("a"))
    other = store.webhooks.create(spec("b"))
    with pytest.raises(Conflict, match="a webhook named 'a' already exists"):
        store.webhooks.create(spec("a"))
    with pytest.raises(Conflict):
        store.webhooks.update(other.id, spec("a"))
    assert [w.name for w in store.webhooks.list()] == ["a", "b"]


def test_update_changes_the_fields_and_keeps_the_slug(store: Store, clock: ManualClock) -> None:
    created = store.webhooks.create(spec())
    clock.set(T0 + timedelta(minutes=5))
    changed = store.webhooks.update(
        created.id, spec("gh", description="d", enabled=False, template='{"event": "{{ 1 }}"}')
    )
    assert (changed.name, changed.description, changed.is_enabled) == ("gh", "d", False)
    assert changed.template == '{"event": "{{ 1 }}"}'
    assert changed.slug == created.slug
    assert (changed.created, changed.updated) == (T0, clock.now())
    assert store.webhooks.for_slug(created.slug) == changed  # the map saw the change


def test_rotating_gives_a_new_slug_and_forgets_the_old_one(store: Store) -> None:
    created = store.webhooks.create(spec())
    assert store.webhooks.for_slug(created.slug) is not None
    rotated = store.webhooks.rotate(created.id)
    assert rotated.slug != created.slug and SLUG.match(rotated.slug)
    assert (rotated.id, rotated.name, rotated.template) == (created.id, "github", TEMPLATE)
    assert store.webhooks.for_slug(created.slug) is None
    assert store.webhooks.for_slug(rotated.slug) == rotated


def test_delete_removes_the_webhook_and_its_url(store: Store) -> None:
    created = store.webhooks.create(spec())
    store.webhooks.for_slug(created.slug)  # builds the map
    store.webhooks.delete(created.id)
    assert store.webhooks.for_slug(created.slug) is None
    with pytest.raises(NotFound):
        store.webhooks.read(created.id)
    with pytest.raises(NotFound):
        store.webhooks.delete(created.id)


def test_unknown_webhooks_are_not_found(store: Store) -> None:
    missing = uuid.uuid4()
    with pytest.raises(NotFound, match="no webhook named 'nope'"):
        store.webhooks.read_by_name("nope")
    for call in (store.webhooks.read, store.webhooks.rotate):
        with pytest.raises(NotFound):
            call(missing)
    with pytest.raises(NotFound):
        store.webhooks.update(missing, spec())
    assert store.webhooks.for_slug("no-such-slug") is None


def test_list_filters_by_name_prefix_and_enabled(store: Store) -> None:
    store.webhooks.create(spec("ci-github"))
    store.webhooks.create(spec("ci-gitlab", enabled=False))
    store.webhooks.create(spec("cron"))
    assert [w.name for w in store.webhooks.list(name_prefix="ci-")] == ["ci-github", "ci-gitlab"]
    assert [w.name for w in store.webhooks.list(enabled=False)] == ["ci-gitlab"]
    assert [w.name for w in store.webhooks.list(name_prefix="ci-", enabled=True)] == ["ci-github"]


def test_disabled_webhooks_still_resolve_so_the_server_can_refuse_them(store: Store) -> None:
    created = store.webhooks.create(spec(enabled=False))
    found = store.webhooks.for_slug(created.slug)
    assert found is not None and not found.is_enabled


def test_webhooks_and_their_urls_survive_a_restart(db_path: Path) -> None:
    with Store.open(db_path) as first:
        created = first.webhooks.create(spec())
    with Store.open(db_path) as second:
        assert second.webhooks.for_slug(created.slug) == created


def test_the_rpc_view_shows_the_url(store: Store) -> None:
    created = store.webhooks.create(spec())
    view = created.to_json("http://127.0.0.1:7602/hooks/")
    assert view["url"] == f"http://127.0.0.1:7602/hooks/{created.slug}"
    assert view["enabled"] is True and view["id"] == str(created.id)
    assert created.to_json(None)["url"] is None


def test_a_database_from_before_webhooks_is_upgraded_and_keeps_its_data(db_path: Path) -> None:
    # The file exactly as a Marmot with the first four migrations left it.
    db_path.parent.mkdir(parents=True)
    conn = sqlite3.connect(db_path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("BEGIN")
    conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    for migrate in MIGRATIONS[:4]:
        migrate(conn)
    conn.execute("INSERT INTO schema_version VALUES (4)")
    automation = Automation.model_validate(
        {"name": "old", "trigger": {"type": "event", "expect": ["x"]}, "actions": []}
    )
    stamp = int(T0.timestamp() * 1_000_000)
    conn.execute(
        "INSERT INTO automations VALUES (?, ?, 1, ?, ?, ?, 1)",
        (str(automation.id), automation.name, automation.model_dump_json(), stamp, stamp),
    )
    conn.execute("COMMIT")
    conn.close()

    with Store.open(db_path) as upgraded:
        assert upgraded.db.schema_version() == SCHEMA_VERSION
        assert MIGRATIONS[4].__name__ == "_create_webhooks_table"
        assert upgraded.automations.read(automation.id).automation == automation
        assert upgraded.webhooks.list() == []
        created = upgraded.webhooks.create(spec())
        assert upgraded.webhooks.for_slug(created.slug) == created
