"""Finding the ids of the Prefect deployments a ``prefect.yaml`` names.

A ``prefect.yaml`` names deployments (and their flows' entrypoints), never
their ids; the Prefect API that ``prefect deploy`` wrote them to knows the
ids. :class:`PrefectDeploymentResolver` asks it once for every name, and
takes ids given explicitly (for offline use) without asking.
"""

from __future__ import annotations

import asyncio
import os
import posixpath
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol
from uuid import UUID

from marmot.engine.errors import MarmotError, NotFound, ValidationFailed

if TYPE_CHECKING:
    import httpx

__all__ = [
    "DeploymentLookupFailed",
    "DeploymentRef",
    "DeploymentResolver",
    "PrefectDeploymentResolver",
]

# Prefect's largest page for filter endpoints.
_PAGE = 200


@dataclass(frozen=True)
class DeploymentRef:
    """A deployment as a ``prefect.yaml`` names it: its name and its flow's entrypoint."""

    name: str
    entrypoint: str | None = None

    def describe(self) -> str:
        """``deployment 'etl' (entrypoint flows/etl.py:etl)``, for messages."""
        where = f" (entrypoint {self.entrypoint})" if self.entrypoint else ""
        return f"deployment {self.name!r}{where}"


class DeploymentResolver(Protocol):
    """Turns deployment references into deployment ids."""

    def resolve(self, refs: Sequence[DeploymentRef]) -> dict[DeploymentRef, UUID]:
        """The id of every reference; raises a ``MarmotError`` naming one it cannot find."""
        ...


class DeploymentLookupFailed(MarmotError):
    """Raised when the Prefect API cannot be asked for deployment ids."""

    code = "deployment_lookup_failed"


class PrefectDeploymentResolver:
    """Looks deployment ids up on a Prefect API (``POST /deployments/filter``).

    ``api_url`` defaults to ``$PREFECT_API_URL`` and ``api_key`` (sent as a
    bearer token) to ``$PREFECT_API_KEY``, read when the resolver is made.
    ``ids`` maps deployment names to ids used as given, with no request.
    Synchronous: call it from plain code, not inside a running event loop.
    ``transport`` replaces the network (tests only).
    """

    def __init__(
        self,
        api_url: str | None = None,
        *,
        api_key: str | None = None,
        ids: Mapping[str, UUID] | None = None,
        timeout_s: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.api_url = api_url or os.environ.get("PREFECT_API_URL") or None
        self._api_key = api_key if api_key is not None else os.environ.get("PREFECT_API_KEY")
        self.ids = dict(ids or {})
        self.timeout_s = timeout_s
        self._transport = transport

    def resolve(self, refs: Sequence[DeploymentRef]) -> dict[DeploymentRef, UUID]:
        """The id of every reference: given ones as they are, the rest from the API.

        When several flows have a deployment of that name, the one whose
        entrypoint is the reference's is chosen. Raises ``NotFound`` for a
        deployment the API does not have, ``ValidationFailed`` when there is
        no API to ask or the choice is ambiguous, and ``DeploymentLookupFailed``
        when the API cannot be reached or refuses.
        """
        found: dict[DeploymentRef, UUID] = {}
        named = Counter(ref.name for ref in set(refs))
        for ref in refs:
            if ref.name not in self.ids:
                continue
            if named[ref.name] > 1:
                raise ValidationFailed(
                    f"the id given for {ref.name!r} fits {named[ref.name]} deployments of that "
                    "name in the file (different entrypoints); select one of them"
                )
            found[ref] = self.ids[ref.name]
        missing = [ref for ref in dict.fromkeys(refs) if ref not in found]
        if not missing:
            return found
        if not self.api_url:
            raise ValidationFailed(
                f"{missing[0].describe()} needs its id: set PREFECT_API_URL, pass "
                f"--prefect-api-url URL, or give it with --deployment-id {missing[0].name}=UUID"
            )
        deployments = self._fetch(sorted({ref.name for ref in missing}))
        for ref in missing:
            found[ref] = self._pick(ref, [d for d in deployments if d.get("name") == ref.name])
        return found

    def _pick(self, ref: DeploymentRef, candidates: list[dict[str, Any]]) -> UUID:
        if not candidates:
            raise NotFound(
                f"{ref.describe()} not found on the Prefect API at {self.api_url}: "
                "run `prefect deploy` first"
            )
        if len(candidates) == 1:
            return self._id_of(candidates[0])
        if ref.entrypoint is not None:
            wanted = _normal_entrypoint(ref.entrypoint)
            same = [
                d
                for d in candidates
                if isinstance(d.get("entrypoint"), str)
                and _normal_entrypoint(d["entrypoint"]) == wanted
            ]
            if len(same) == 1:
                return self._id_of(same[0])
        listed = "; ".join(f"{d.get('id')} (entrypoint {d.get('entrypoint')})" for d in candidates)
        raise ValidationFailed(
            f"{ref.describe()} is ambiguous on the Prefect API at {self.api_url}: "
            f"{len(candidates)} flows have a deployment of that name ({listed}); "
            f"choose one with --deployment-id {ref.name}=UUID"
        )

    def _id_of(self, deployment: dict[str, Any]) -> UUID:
        try:
            return UUID(str(deployment.get("id")))
        except ValueError:
            raise DeploymentLookupFailed(
                f"the Prefect API at {self.api_url} answered a deployment without a valid id: "
                f"{deployment.get('id')!r}"
            ) from None

    def _fetch(self, names: list[str]) -> list[dict[str, Any]]:
        """Every deployment with one of these names, page after page."""
        # Imported here: the HTTP client is only needed when a lookup is made, and
        # importing it slowed every `marmot automation` command.
        from marmot.actors.action_runs import ActionFailed
        from marmot.transport.orchestrator import OrchestratorClient

        assert self.api_url is not None

        async def fetch(api_url: str) -> list[dict[str, Any]]:
            client = OrchestratorClient(
                api_url, api_key=self._api_key, timeout_s=self.timeout_s, transport=self._transport
            )
            found: list[dict[str, Any]] = []
            try:
                while True:
                    page = await client.filter_deployments(names, limit=_PAGE, offset=len(found))
                    found.extend(page)
                    if len(page) < _PAGE:
                        return found
            finally:
                await client.aclose()

        try:
            return asyncio.run(fetch(self.api_url))
        except ActionFailed as exc:
            raise DeploymentLookupFailed(
                f"could not look deployments up on the Prefect API at {self.api_url}: {exc} "
                "(check the URL and PREFECT_API_KEY, or give ids with --deployment-id NAME=UUID)"
            ) from exc


def _normal_entrypoint(entrypoint: str) -> str:
    # `./flows/etl.py:etl` and `flows/etl.py:etl` name the same flow.
    path, colon, function = entrypoint.strip().rpartition(":")
    if not colon:
        return posixpath.normpath(entrypoint.strip())
    return f"{posixpath.normpath(path)}:{function}"
