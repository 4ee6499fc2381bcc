"""The web console in a real browser (Debian's chromium under Playwright) against
real daemons: the session's loopback daemon, and one bound beyond loopback
that asks for a login."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from marmot.transport.client import Client
from marmot.transport.daemon import DaemonThread
from tests.integration.console_browser import CHROMIUM, launch
from tests.integration.harness import event_doc, make_config, reactive_doc, wait_for
from tests.integration.prefect_server import (
    create_deployment,
    create_work_pool,
    create_work_queue,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="needs /usr/bin/chromium (make test installs it)"
    ),
]

# Waits for what the page shows live (SSE) or after a round trip through Ray.
LIVE_MS = 30_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = launch(playwright)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context()
    tab = context.new_page()
    tab.set_default_timeout(LIVE_MS)
    yield tab
    context.close()


@pytest.fixture
def client(daemon: DaemonThread) -> Iterator[Client]:
    with Client(daemon.rpc_url, timeout_s=30) as c:
        yield c


def _ui(daemon: DaemonThread) -> str:
    return f"http://127.0.0.1:{daemon.config.http.port}/ui"


def test_root_redirects_to_the_console(daemon: DaemonThread, page: Page) -> None:
    page.goto(f"http://127.0.0.1:{daemon.config.http.port}/")
    expect(page).to_have_url(re.compile(r"/ui/automations$"))
    expect(page.get_by_role("heading", name="Automations")).to_be_visible()


def test_create_from_a_template_see_it_listed_and_toggle_it(
    daemon: DaemonThread, client: Client, page: Page
) -> None:
    name = f"custom {uuid4().hex[:8]}"
    page.goto(_ui(daemon) + "/automations/new")
    page.get_by_role("link", name="Custom event").click()
    editor = page.get_by_label("Automation, in Prefect's schema (YAML or JSON)")
    text = editor.input_value()
    assert "my.custom.event" in text
    editor.fill(text.replace("name: custom event", f"name: {name}"))
    page.get_by_role("button", name="Create").click()
    expect(page.get_by_role("heading", name=name)).to_be_visible()
    automation = client.read_automation_by_name(name)
    assert automation.trigger.type == "event" and automation.enabled

    page.goto(_ui(daemon) + "/automations?q=" + name.replace(" ", "+"))
    row = page.locator("tr", has=page.get_by_role("link", name=name))
    expect(row).to_contain_text("Reactive: my.custom.event for each prefect.resource.id")
    expect(row.locator("[data-col=firings_24h]")).to_have_text("0")  # the live columns load
    row.get_by_role("switch", name=f"Pause {name}").click()
    expect(row.get_by_role("switch")).to_have_text(re.compile("Paused"))
    assert client.read_automation(automation.id).enabled is False
    row.get_by_role("switch", name=f"Resume {name}").click()
    expect(row.get_by_role("switch")).to_have_text(re.compile("Enabled"))
    assert client.read_automation(automation.id).enabled is True


def test_a_firing_appears_live_on_the_detail_page_and_in_the_feed(
    daemon: DaemonThread, client: Client, browser: Browser, page: Page
) -> None:
    event_name = f"it.console.{uuid4().hex[:8]}"
    automation = client.create_automation(reactive_doc(f"live {event_name}", event_name))
    page.goto(f"{_ui(daemon)}/automations/{automation.id}")
    expect(page.get_by_text("No firings yet.")).to_be_visible()
    feed = browser.new_page()
    feed.set_default_timeout(LIVE_MS)
    feed.goto(f"{_ui(daemon)}/events?name={event_name}")
    expect(feed.locator("#feed tbody tr")).to_have_count(0)

    client.emit([event_doc(event_name, "it.resource.1")])

    firing = page.locator("[data-testid=firings] li").first
    expect(firing).to_contain_text("do-nothing: executed")  # updated live, no reload
    firing.locator("summary").click()
    outcome = firing.get_by_role("table", name="Actions of this firing")
    expect(outcome.locator("tbody tr").first).to_contain_text("executed")
    expect(
        page.get_by_role("table", name="Triggering events of the recent firings")
    ).to_contain_text(event_name)
    expect(feed.locator("#feed tbody tr").first).to_contain_text(event_name)
    feed.close()


def test_an_incident_is_resolved_from_the_incidents_page(
    daemon: DaemonThread, client: Client, page: Page
) -> None:
    event_name = f"it.outage.{uuid4().hex[:8]}"
    title = f"outage {event_name}"
    automation = client.create_automation(
        {
            **reactive_doc(f"incident {event_name}", event_name),
            "actions": [{"type": "declare-incident", "title": title}],
        }
    )
    client.emit([event_doc(event_name)])
    incident = wait_for(
        lambda: client.list_incidents(automation_id=automation.id), what="the incident"
    )[0]
    page.goto(_ui(daemon) + "/incidents")
    page.get_by_role("button", name=f"Resolve {title}").click()
    expect(page.get_by_role("button", name=f"Resolve {title}")).to_have_count(0)
    assert client.read_incident(incident["id"])["status"] == "resolved"
    page.goto(_ui(daemon) + "/incidents?status=resolved")
    expect(page.locator("#incidents")).to_contain_text(title)


def test_a_webhook_is_created_and_its_url_rotated_after_a_confirm(
    daemon: DaemonThread, client: Client, page: Page
) -> None:
    name = f"hook-{uuid4().hex[:8]}"
    page.goto(_ui(daemon) + "/webhooks")
    page.get_by_label("Name", exact=True).fill(name)
    page.get_by_role("button", name="Create webhook").click()
    row = page.locator("tr", has_text=name)
    before = client.read_webhook_by_name(name)
    expect(row.get_by_test_id("webhook-url")).to_have_text(before["url"])
    dialogs: list[str] = []

    def accept(dialog: object) -> None:
        dialogs.append(dialog.message)  # type: ignore[attr-defined]
        dialog.accept()  # type: ignore[attr-defined]

    page.once("dialog", accept)
    row.get_by_role("button", name="Rotate URL").click()
    after = wait_for(
        lambda: (w := client.read_webhook_by_name(name))["slug"] != before["slug"] and w,
        what="a new slug",
    )
    expect(page.locator("tr", has_text=name).get_by_test_id("webhook-url")).to_have_text(
        after["url"]
    )
    assert dialogs and "old URL stops working" in dialogs[0]
    assert httpx.post(before["url"], json={}).status_code == 404


def test_bad_yaml_and_a_bad_field_show_inline_errors(daemon: DaemonThread, page: Page) -> None:
    page.goto(_ui(daemon) + "/automations/new")
    editor = page.get_by_label("Automation, in Prefect's schema (YAML or JSON)")
    editor.fill("name: broken\ntrigger: [unclosed\n")
    page.get_by_role("button", name="Create").click()
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("not valid YAML")
    expect(alert).to_contain_text("line")
    expect(editor).to_have_value("name: broken\ntrigger: [unclosed\n")  # kept for fixing

    editor.fill(
        "name: bad window\ntrigger:\n  type: event\n  expect: [a.b]\n  within: 1h\n"
        "actions: [{type: do-nothing}]\n"
    )
    page.get_by_role("button", name="Create").click()
    # The field path as the RPC returns it, and the CLI's message.
    expect(page.get_by_role("alert")).to_contain_text("within")
    expect(page.get_by_role("alert")).to_contain_text("validation")


def test_markup_in_an_event_is_shown_as_text(
    daemon: DaemonThread, client: Client, page: Page
) -> None:
    attack = "<script>window.__owned = 1</script><img src=x onerror='window.__owned = 2'>"
    name = f"it.xss.{uuid4().hex[:8]}"
    client.emit(
        [
            event_doc(
                name,
                f"it.xss.{attack}",
                payload={"note": attack},
            )
        ]
    )
    page.goto(f"{_ui(daemon)}/events?name={name}")
    row = page.locator("#feed tbody tr").first
    expect(row).to_contain_text(attack)  # the markup, as text
    row.get_by_role("link").first.click()
    expect(page.get_by_test_id("event-json")).to_contain_text(attack)
    assert page.evaluate("window.__owned") is None
    assert page.locator("script:not([src])").count() == 0


def test_a_name_with_markup_is_text_in_the_list_and_detail(
    daemon: DaemonThread, client: Client, page: Page
) -> None:
    name = f"<b>bold</b><script>window.__owned = 3</script> {uuid4().hex[:6]}"
    automation = client.create_automation(reactive_doc(name, "it.markup"))
    page.goto(f"{_ui(daemon)}/automations/{automation.id}")
    expect(page.get_by_role("heading", level=1)).to_have_text(name)
    page.goto(_ui(daemon) + "/automations?q=" + httpx.QueryParams({"q": name})["q"])
    expect(page.get_by_role("link", name=name)).to_be_visible()
    assert page.evaluate("window.__owned") is None


def test_the_test_box_says_per_condition_whether_an_event_would_fire(
    daemon: DaemonThread, page: Page
) -> None:
    page.goto(_ui(daemon) + "/automations/new?template=flow-run-state")
    box = page.get_by_label("An event (JSON or YAML)")
    box.fill('{"event": "prefect.flow-run.Failed", "resource": {"prefect.resource.id": "x.1"}}')
    page.get_by_role("button", name="Test").click()
    result = page.locator("#test-result")
    expect(result).to_contain_text("prefect.flow-run.Failed: does not fire")
    expect(result).to_contain_text("prefect.resource.id = 'x.1' matches [prefect.flow-run.*]: no")
    box.fill("event: prefect.flow-run.Failed\nresource: {prefect.resource.id: prefect.flow-run.1}")
    page.get_by_role("button", name="Test").click()
    expect(result).to_contain_text("prefect.flow-run.Failed: fires")
    box.fill("event: [broken")
    page.get_by_role("button", name="Test").click()
    expect(result).to_contain_text("error: not valid YAML")


def test_the_form_lists_the_orchestrators_deployments_pools_and_queues(
    orchestrated: DaemonThread, prefect_api: str, page: Page
) -> None:
    pool = create_work_pool(prefect_api)
    queue = create_work_queue(prefect_api, pool["name"])
    deployment = create_deployment(prefect_api, work_pool_name=pool["name"])
    page.goto(_ui(orchestrated) + "/automations/new")
    section = page.get_by_role("region", name="On the orchestrator")
    for item in (pool, queue, deployment):
        expect(section.get_by_role("button", name=f"Copy the id of {item['name']}")).to_be_visible()


def test_a_block_is_created_shown_masked_and_deleted_after_a_confirm(
    daemon: DaemonThread, client: Client, page: Page
) -> None:
    name = f"slack-{uuid4().hex[:8]}"
    secret = "https://hooks.slack.com/services/T0/B0/very-secret"
    page.goto(_ui(daemon) + "/blocks")
    page.get_by_label("Block document (YAML or JSON)").fill(
        f"name: {name}\nblock_type_slug: slack-webhook\ndata:\n  url: {secret}\n"
    )
    page.get_by_role("button", name="Create block").click()
    row = page.locator("#blocks tr", has_text=name)
    expect(row).to_contain_text("slack-webhook")
    assert "very-secret" not in page.content()
    page.once("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name="Delete").click()
    expect(page.locator("#blocks tr", has_text=name)).to_have_count(0)
    assert all(b["name"] != name for b in client.list_blocks())


def test_stopping_the_daemon_ends_its_live_streams(
    ray_session: None, tmp_path_factory: pytest.TempPathFactory
) -> None:
    config = make_config(
        Path(tmp_path_factory.mktemp("streams")),
        **{"ray.namespace": f"marmot-console-{uuid4().hex[:8]}"},
    )
    running = DaemonThread(config).start()
    opened = threading.Event()
    ended = threading.Event()

    def read() -> None:
        url = f"http://127.0.0.1:{config.http.port}/ui/events/live?after=0"
        with httpx.Client(timeout=None) as http, http.stream("GET", url) as reply:
            assert reply.headers["content-type"].startswith("text/event-stream")
            opened.set()
            for _ in reply.iter_bytes():
                pass
        ended.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert opened.wait(30)
    # uvicorn waits for open responses: a stream the console did not end would
    # keep the daemon from stopping.
    stopper = threading.Thread(target=running.stop, daemon=True)
    stopper.start()
    stopper.join(30)
    assert not stopper.is_alive(), "the daemon did not stop with a live stream open"
    assert ended.wait(10)


# -- bound beyond loopback ------------------------------------------------------------

TOKEN = "console-token-for-the-test"


@pytest.fixture(scope="module")
def exposed(ray_session: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonThread]:
    """A daemon whose HTTP server listens on every interface (reached here on 127.0.0.1)."""
    config = make_config(
        Path(tmp_path_factory.mktemp("exposed")),
        **{
            "ray.namespace": f"marmot-console-{uuid4().hex[:8]}",
            "http.host": "0.0.0.0",
            "http.console_token": TOKEN,
        },
    )
    running = DaemonThread(config).start()
    yield running
    running.stop()


def test_beyond_loopback_the_console_asks_for_a_login_and_refuses_posts_without_csrf(
    exposed: DaemonThread, page: Page
) -> None:
    base = f"http://127.0.0.1:{exposed.config.http.port}"
    with Client(exposed.rpc_url, timeout_s=30) as c:
        automation = c.create_automation(reactive_doc("guarded", "it.guarded"))
    page.goto(base + "/ui/automations")
    expect(page).to_have_url(re.compile(r"/ui/login\?next="))
    page.get_by_label("Token").fill("wrong")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_contain_text("not this daemon's console token")
    page.get_by_label("Token").fill(TOKEN)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(re.compile(r"/ui/automations$"))
    expect(page.get_by_role("link", name="guarded")).to_be_visible()
    cookie = next(c for c in page.context.cookies() if c["name"] == "marmot_console")
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict"

    # A logged-in browser's POST without the CSRF token is refused, and changes nothing.
    refused = page.request.post(
        f"{base}/ui/automations/{automation.id}/pause", form={"next": "/automations"}
    )
    assert refused.status == 403 and "CSRF" in refused.text()
    with Client(exposed.rpc_url, timeout_s=30) as c:
        assert c.read_automation(automation.id).enabled is True
    # With a token from another session, too.
    stranger = httpx.Client(base_url=base)
    stranger.get("/ui/login")
    assert (
        stranger.post(
            f"/ui/automations/{automation.id}/pause", data={"csrf_token": "guess"}
        ).status_code
        == 403
    )
    # Webhooks stay outside the console's login.
    assert httpx.post(base + "/hooks/no-such-slug", json={}).status_code == 404
