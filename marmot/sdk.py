"""The Prefect-style SDK: ``Automation(...).create()`` and friends.

``marmot.Automation`` is the engine's schema plus methods that talk to the
daemon through ``Client`` (found via ``MARMOT_RPC_URL`` / ``MARMOT_TOKEN``,
or pass ``client=``). Async twins are prefixed with ``a``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Self
from uuid import UUID

from marmot.engine.models.automations import Automation as AutomationSchema
from marmot.transport.client import AsyncClient, Client


@contextmanager
def _using(client: Client | None) -> Iterator[Client]:
    """The given client, or a default one closed afterwards."""
    if client is not None:
        yield client
        return
    with Client() as owned:
        yield owned


class Automation(AutomationSchema):
    """An automation you can create, read, update, pause, resume and delete."""

    def _rebuild(self, other: AutomationSchema) -> Self:
        return type(self).model_validate(other.model_dump())

    def create(self, *, client: Client | None = None) -> Self:
        """Create it on the daemon; returns it as stored (with its id)."""
        with _using(client) as c:
            return self._rebuild(c.create_automation(self))

    def update(self, *, client: Client | None = None) -> Self:
        """Replace the stored automation with this one (state resets)."""
        with _using(client) as c:
            return self._rebuild(c.update_automation(self.id, self))

    def delete(self, *, client: Client | None = None) -> bool:
        """Delete it; returns True."""
        with _using(client) as c:
            c.delete_automation(self.id)
            return True

    def pause(self, *, client: Client | None = None) -> Self:
        """Stop evaluating it."""
        with _using(client) as c:
            return self._rebuild(c.pause_automation(self.id))

    def resume(self, *, client: Client | None = None) -> Self:
        """Start evaluating it again."""
        with _using(client) as c:
            return self._rebuild(c.resume_automation(self.id))

    @classmethod
    def read(
        cls, name: str | None = None, *, id: UUID | str | None = None, client: Client | None = None
    ) -> Self:
        """Read by ``id=`` or by name (``NotFound`` when there is none)."""
        if (name is None) == (id is None):
            raise TypeError("Automation.read takes a name or id=, not both")
        with _using(client) as c:
            found = (
                c.read_automation(id) if id is not None else c.read_automation_by_name(name or "")
            )
            return cls.model_validate(found.model_dump())

    async def acreate(self, *, client: AsyncClient | None = None) -> Self:
        """``create``, awaitable."""
        c = client or AsyncClient()
        try:
            return self._rebuild(await c.create_automation(self))
        finally:
            if client is None:
                c.close()

    async def aupdate(self, *, client: AsyncClient | None = None) -> Self:
        """``update``, awaitable."""
        c = client or AsyncClient()
        try:
            return self._rebuild(await c.update_automation(self.id, self))
        finally:
            if client is None:
                c.close()

    async def adelete(self, *, client: AsyncClient | None = None) -> bool:
        """``delete``, awaitable."""
        c = client or AsyncClient()
        try:
            await c.delete_automation(self.id)
            return True
        finally:
            if client is None:
                c.close()

    @classmethod
    async def aread(
        cls,
        name: str | None = None,
        *,
        id: UUID | str | None = None,
        client: AsyncClient | None = None,
    ) -> Self:
        """``read``, awaitable."""
        if (name is None) == (id is None):
            raise TypeError("Automation.aread takes a name or id=, not both")
        c = client or AsyncClient()
        try:
            found: Any = (
                await c.read_automation(id)
                if id is not None
                else await c.read_automation_by_name(name or "")
            )
            return cls.model_validate(found.model_dump())
        finally:
            if client is None:
                c.close()
