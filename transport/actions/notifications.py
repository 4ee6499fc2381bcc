"""``send-notification`` and ``call-webhook``: templates rendered, then sent through a block.

Blocks come from Marmot's store, or, when an id is not stored here and an
orchestrator is configured, from its ``/block_documents/{id}``. Each runner
makes one attempt; the executor retries a ``TransientFailure``.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol
from uuid import UUID, uuid5

import httpx

from marmot.actors.action_runs import ActionFailed, ActionResult, ActionRun, Runner
from marmot.actors.store import Store
from marmot.config import ExecutorsConfig
from marmot.engine.errors import MarmotError, NotFound
from marmot.engine.models.actions import CallWebhook, SendNotification
from marmot.engine.models.blocks import BlockDocument, block_from_prefect
from marmot.engine.models.service_blocks import CustomWebhook
from marmot.transport.apprise_notify import APPRISE_BLOCKS, send_through_apprise
from marmot.transport.custom_webhook import send_custom_webhook
from marmot.transport.notify import Delivery, call_webhook, send_notification

__all__ = [
    "BlockDocumentReader",
    "BlockResolver",
    "TemplateRenderer",
    "notification_runners",
]

log = logging.getLogger(__name__)

# Email Message-IDs are derived from the action's idempotency key, so a
# duplicate delivery that slipped through carries the same id.
_MESSAGE_ID_NAMESPACE = UUID("3e0b7c52-8f4d-5a61-9c2e-7d1f0a6b4c83")


class TemplateRenderer(Protocol):
    """Renders an action's template for one run (``transport/actions/rendering.py``)."""

    async def render(self, source: str, run: ActionRun) -> str:
        """The rendered text; raises ``ActionFailed`` when the template fails."""
        ...


class BlockDocumentReader(Protocol):
    """Reads a block document from a Prefect-compatible orchestrator."""

    async def read_block_document(self, id: UUID, /) -> dict[str, Any]:
        """Prefect's block-document JSON (``id``, ``name``, ``data``, ``block_type``
        with its ``slug``, ...) with secrets included; raises ``NotFound`` if the
        orchestrator has no such document."""
        ...


class BlockResolver:
    """Finds the block an action names: in the store, else on the orchestrator."""

    def __init__(self, store: Store, orchestrator: BlockDocumentReader | None = None) -> None:
        self._store = store
        self._orchestrator = orchestrator

    async def resolve(self, block_document_id: UUID) -> BlockDocument:
        """The block with its secrets; raises ``ActionFailed`` when it cannot be found
        or its type is not one Marmot sends through."""
        try:
            return self._store.blocks.read(block_document_id, include_secrets=True)
        except NotFound:
            pass
        orchestrator = self._orchestrator
        if orchestrator is None:
            raise ActionFailed(f"block document {block_document_id} does not exist")
        try:
            document = await orchestrator.read_block_document(block_document_id)
        except NotFound:
            raise ActionFailed(
                f"block document {block_document_id} does not exist here or on the orchestrator"
            ) from None
        except MarmotError as exc:
            raise ActionFailed(
                f"block document {block_document_id} could not be read from the orchestrator: "
                f"{exc.message}"
            ) from None
        try:
            block = block_from_prefect(document)
        except MarmotError as exc:
            raise ActionFailed(exc.message) from None
        log.debug(
            "read %s from the orchestrator",
            block.describe(),
            extra={"block_document_id": str(block_document_id)},
        )
        return block


def notification_runners(
    blocks: BlockResolver,
    renderer: TemplateRenderer,
    http: httpx.AsyncClient,
    executors: ExecutorsConfig,
) -> dict[str, Runner]:
    """Runners for ``send-notification`` and ``call-webhook``."""

    async def _deliver(block: BlockDocument, subject: str, body: str, key: str) -> Delivery:
        # Each block type goes to its sender: custom webhooks over httpx, the
        # Apprise-backed services through Apprise, the rest in notify.py.
        data = block.data
        if isinstance(data, CustomWebhook):
            return await send_custom_webhook(http, block, subject, body, idempotency_key=key)
        if isinstance(data, APPRISE_BLOCKS):
            return await send_through_apprise(
                block, subject, body, timeout_s=executors.action_timeout_s
            )
        return await send_notification(
            http,
            block,
            subject,
            body,
            smtp_timeout_s=executors.action_timeout_s,
            message_id=f"<{uuid5(_MESSAGE_ID_NAMESPACE, key)}@marmot>",
            idempotency_key=key,
        )

    async def notify(run: ActionRun) -> ActionResult:
        action = run.action
        if not isinstance(action, SendNotification):
            raise ActionFailed(f"send-notification cannot run a {action.type} action")
        block = await blocks.resolve(action.block_document_id)
        if not block.data.can_notify:
            raise ActionFailed(f"{block.describe()} cannot send notifications")
        subject = await renderer.render(action.subject, run)
        body = await renderer.render(action.body, run)
        delivery = await _deliver(block, subject, body, run.key)
        return ActionResult(
            f"sent to {block.describe()} ({delivery.status})",
            extra={**_block_extra(block), "status": delivery.status, **delivery.extra},
        )

    async def call(run: ActionRun) -> ActionResult:
        action = run.action
        if not isinstance(action, CallWebhook):
            raise ActionFailed(f"call-webhook cannot run a {action.type} action")
        block = await blocks.resolve(action.block_document_id)
        if not block.data.can_call:
            # Prefect's rule: call-webhook needs a webhook block.
            raise ActionFailed(
                f"{block.describe()} is not a webhook block; call-webhook needs one "
                "(use send-notification for notification blocks)"
            )
        payload = await renderer.render(action.payload, run) if action.payload else ""
        delivery = await call_webhook(http, block, payload, idempotency_key=run.key)
        return ActionResult(
            f"called {block.describe()} ({delivery.status})",
            extra={
                **_block_extra(block),
                "status_code": delivery.status_code,
                "response_body": delivery.response_body,
            },
        )

    return {"send-notification": notify, "call-webhook": call}


def _block_extra(block: BlockDocument) -> dict[str, object]:
    return {
        "block_document_id": str(block.id),
        "block_name": block.name,
        "block_type_slug": block.block_type_slug,
    }
