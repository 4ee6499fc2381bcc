"""``marmot block types`` and ``block create --type``: every type documented with
Prefect's field names, and each type's fields checked before anything is sent."""

from __future__ import annotations

import json
from typing import Any

import pytest

from marmot.cli import main
from marmot.cli.block_types import field_docs
from marmot.engine.models.blocks import BLOCK_TYPES


def _prefect_blocks() -> dict[str, Any]:
    from prefect.blocks import notifications as n
    from prefect.blocks.webhook import Webhook

    return {
        "slack-webhook": n.SlackWebhook,
        "ms-teams-webhook": n.MicrosoftTeamsWebhook,
        "custom-webhook": n.CustomWebhookNotificationBlock,
        "discord-webhook": n.DiscordWebhook,
        "mattermost-webhook": n.MattermostWebhook,
        "pager-duty-webhook": n.PagerDutyWebHook,
        "opsgenie-webhook": n.OpsgenieWebhook,
        "sendgrid-email": n.SendgridEmail,
        "twilio-sms": n.TwilioSMS,
        "webhook": Webhook,
    }


# Types whose defaults Marmot keeps as Prefect's (Slack and Teams keep the older
# ``prefect_default`` notify type documents were written with).
_SAME_DEFAULTS = {
    "custom-webhook",
    "discord-webhook",
    "mattermost-webhook",
    "pager-duty-webhook",
    "opsgenie-webhook",
    "sendgrid-email",
    "twilio-sms",
}


@pytest.mark.parametrize("slug", sorted(_prefect_blocks()))
def test_each_type_has_prefects_fields(slug: str) -> None:
    theirs = _prefect_blocks()[slug]
    assert theirs.get_block_type_slug() == slug
    ours = {d["field"]: d for d in field_docs(slug)}
    assert set(ours) == set(theirs.model_fields)
    for name, info in theirs.model_fields.items():
        assert ours[name]["required"] == info.is_required(), name
        if slug in _SAME_DEFAULTS and not info.is_required() and info.default_factory is None:
            default = info.default
            default = str(default) if default is not None and name == "clickable_url" else default
            assert ours[name]["default"] == default, name


def test_block_types_lists_every_type(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["block", "types", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["type"] for r in rows] == sorted(BLOCK_TYPES)
    assert len(rows) == 11


def test_block_types_documents_one_types_fields(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["block", "types", "twilio-sms", "--json"]) == 0
    rows = {r["field"]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    assert rows["auth_token"]["secret"] is True and rows["auth_token"]["required"] is True
    assert rows["account_sid"]["secret"] is False
    assert rows["to_phone_numbers"]["type"] == "list of string"
    assert rows["notify_type"]["default"] == "info"
    assert all(r["description"] for r in rows.values())


def test_create_help_names_each_types_required_fields(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        main(["block", "create", "--help"])
    out = capsys.readouterr().out
    assert "pager-duty-webhook: integration_key, api_key" in out
    assert "custom-webhook: name, url" in out


@pytest.mark.parametrize(
    ("argv", "problem"),
    [
        (["--type", "twilio-sms", "--set", "account_sid=XY1"], "account_sid"),
        (["--type", "discord-webhook", "--set", "webhook_id=abc"], "webhook_token"),
        (
            [
                "--type",
                "sendgrid-email",
                "--set",
                "api_key=k",
                "--set",
                "sender_email=me",
                "--set",
                'to_emails=["a@b.io"]',
            ],
            "sender_email",
        ),
        (["--type", "custom-webhook", "--set", "name=n", "--set", "url=http://h/{{ x }}"], "x"),
        (
            ["--type", "opsgenie-webhook", "--set", "apikey=k", "--set", "priority=high"],
            "priority",
        ),
    ],
)
def test_create_checks_the_types_fields_before_connecting(
    capsys: pytest.CaptureFixture[str], argv: list[str], problem: str
) -> None:
    # The URL points nowhere: the block must be refused before any connection.
    code = main(["block", "create", "--name", "ops", *argv, "--url", "tcp://127.0.0.1:9"])
    err = capsys.readouterr().err
    assert code != 0
    assert problem in err
