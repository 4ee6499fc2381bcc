"""Sending through the blocks Prefect hands to Apprise: Discord, Mattermost, PagerDuty,
Opsgenie, SendGrid and Twilio.

Each block becomes one Apprise plugin built from its fields (never a URL string,
so no secret is parsed back out of one). Apprise is blocking: the send runs in a
worker thread, bounded by Apprise's own call time-out and an outer one. A send
Apprise reports as failed raises ``ActionFailed`` with the warnings Apprise logged
for it, secrets scrubbed; a time-out raises ``ActionFailed`` too, not a transient
failure, since the message may still have gone out and a retry would repeat it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from apprise import Apprise, AppriseAsset, AppriseResult, NotifyBase
from apprise.exception import AppriseException
from apprise.plugins.discord import NotifyDiscord
from apprise.plugins.mattermost import NotifyMattermost
from apprise.plugins.opsgenie import NotifyOpsgenie
from apprise.plugins.pagerduty import NotifyPagerDuty
from apprise.plugins.sendgrid import NotifySendGrid
from apprise.plugins.twilio import NotifyTwilio

from marmot.actors.action_runs import ActionFailed
from marmot.engine.models.block_data import BlockData
from marmot.engine.models.blocks import BlockDocument
from marmot.engine.models.service_blocks import (
    DiscordWebhook,
    MattermostWebhook,
    OpsgenieWebhook,
    PagerDutyWebhook,
    SendgridEmail,
    TwilioSMS,
)
from marmot.transport.notify import Delivery, block_secrets, excerpt

__all__ = [
    "APPRISE_BLOCKS",
    "PAGERDUTY_BODY_DETAIL",
    "apprise_plugin",
    "send_through_apprise",
]

APPRISE_BLOCKS: tuple[type[BlockData], ...] = (
    DiscordWebhook,
    MattermostWebhook,
    PagerDutyWebhook,
    OpsgenieWebhook,
    SendgridEmail,
    TwilioSMS,
)
"""The block types sent through Apprise."""

PAGERDUTY_BODY_DETAIL = "Prefect Notification Body"
"""The custom detail a PagerDuty alert carries its body in (Prefect's name, kept so
PagerDuty rules written for Prefect's alerts still match)."""

# Seconds past Apprise's own time-out before the outer one gives up on the thread.
_GRACE_S = 2.0
_REASON_CHARS = 300

log = logging.getLogger(__name__)


def _asset(timeout_s: float) -> AppriseAsset:
    # In memory: Apprise's persistent store would write under the home directory.
    return AppriseAsset(
        app_id="Marmot Notifications",
        app_desc="Marmot Notifications",
        app_url="https://github.com/marmot-automations/marmot",
        storage_mode="memory",
        service_timeout=timeout_s,
    )


def _notify_type(value: str) -> str:
    # ``prefect_default`` is older Prefect's name for Apprise's ``info``.
    return "info" if value == "prefect_default" else value


def apprise_plugin(
    data: BlockData, *, subject: str = "", body: str = "", timeout_s: float = 30.0
) -> NotifyBase:
    """The Apprise plugin that sends through a block, built from its fields.

    ``subject`` and ``body`` matter only to PagerDuty, which carries the body as
    a custom detail when there is a subject. Raises ``ActionFailed`` for a block
    Apprise refuses (a malformed key, say) or a type Apprise does not send.
    """
    common: dict[str, Any] = {
        "asset": _asset(timeout_s),
        "cto": min(timeout_s, 10.0),
        "rto": timeout_s,
    }
    try:
        return _plugin(data, subject, body, common)
    except (AppriseException, TypeError, ValueError) as exc:
        raise ActionFailed(f"Apprise refused the block: {exc}") from None


def _plugin(data: BlockData, subject: str, body: str, common: dict[str, Any]) -> NotifyBase:
    # Some of Apprise's plugins have untyped constructors: those calls are ignored.
    if isinstance(data, DiscordWebhook):
        return NotifyDiscord(
            webhook_id=data.webhook_id.get_secret_value(),
            webhook_token=data.webhook_token.get_secret_value(),
            tts=data.tts,
            include_image=data.include_image,
            avatar=data.avatar,
            avatar_url=data.avatar_url,
            user=data.botname,
            **common,
        )
    if isinstance(data, MattermostWebhook):
        return NotifyMattermost(
            token=data.token.get_secret_value(),
            fullpath=data.path,
            targets=data.channels,
            include_image=data.include_image,
            host=data.hostname,
            port=data.port,
            secure=data.secure,
            user=data.botname,
            **common,
        )
    if isinstance(data, PagerDutyWebhook):
        details = dict(data.custom_details or {})
        if subject:
            details[PAGERDUTY_BODY_DETAIL] = body
        return NotifyPagerDuty(  # type: ignore[no-untyped-call]
            apikey=data.api_key.get_secret_value(),
            integrationkey=data.integration_key.get_secret_value(),
            source=data.source,
            component=data.component,
            group=data.group,
            class_id=data.class_id,
            region_name=data.region_name,
            click=None if data.clickable_url is None else str(data.clickable_url),
            include_image=data.include_image,
            details=details or None,
            **common,
        )
    if isinstance(data, OpsgenieWebhook):
        return NotifyOpsgenie(  # type: ignore[no-untyped-call]
            apikey=data.apikey.get_secret_value(),
            targets=data.targets(),
            region_name=data.region_name,
            details=data.details,
            priority=data.priority,
            alias=data.alias,
            entity=data.entity,
            batch=data.batch,
            tags=data.tags,
            action="new",
            **common,
        )
    if isinstance(data, SendgridEmail):
        return NotifySendGrid(  # type: ignore[no-untyped-call]
            apikey=data.api_key.get_secret_value(),
            from_email=data.sender_email,
            targets=list(data.to_emails),
            **common,
        )
    if isinstance(data, TwilioSMS):
        return NotifyTwilio(  # type: ignore[no-untyped-call]
            account_sid=data.account_sid,
            auth_token=data.auth_token.get_secret_value(),
            source=data.from_phone_number,
            targets=list(data.to_phone_numbers),
            **common,
        )
    raise ActionFailed(f"a {data.block_type_slug} block is not sent through Apprise")


async def send_through_apprise(
    block: BlockDocument, subject: str, body: str, *, timeout_s: float = 30.0
) -> Delivery:
    """Send a subject and body through an Apprise-backed block, in a worker thread.

    Returns the delivery; raises ``ActionFailed`` with Apprise's reason (secrets
    scrubbed) when the service refused or failed, or when the send did not end
    within ``timeout_s``.
    """
    data = block.data
    what = block.describe()
    secrets = block_secrets(block)
    # PagerDuty: the body rides in a custom detail, the summary is the subject.
    sent_body = " " if isinstance(data, PagerDutyWebhook) and subject else body
    try:
        plugin = apprise_plugin(data, subject=subject, body=body, timeout_s=timeout_s)
    except ActionFailed as exc:
        raise ActionFailed(f"{what}: {excerpt(str(exc), secrets, _REASON_CHARS)}") from None
    client = Apprise(asset=plugin.asset)
    client.add(plugin)
    notify_type = _notify_type(getattr(data, "notify_type", "info"))
    try:
        result = await asyncio.wait_for(
            asyncio.to_thread(
                client.notify,
                body=sent_body,
                title=subject,
                notify_type=notify_type,
                timeout=timeout_s,
            ),
            timeout=timeout_s + _GRACE_S,
        )
    except TimeoutError:
        raise ActionFailed(f"{what}: the service did not answer within {timeout_s:g}s") from None
    if not result:
        raise ActionFailed(f"{what}: {_reason(result, secrets)}")
    log.debug("sent through Apprise to %s", what, extra={"block_document_id": str(block.id)})
    return Delivery(f"sent through {plugin.service_name}")


def _reason(result: AppriseResult, secrets: list[str]) -> str:
    if result.timeout_count:
        return "the service did not answer in time"
    lines = [entry.message for entry in result.logs() if entry.level in ("WARNING", "ERROR")]
    text = "; ".join(dict.fromkeys(line.strip() for line in lines if line.strip()))
    return excerpt(text, secrets, _REASON_CHARS) or "Apprise reported a failed delivery"
