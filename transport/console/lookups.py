"""Names to pick from in the automation form: the orchestrator's deployments, work
pools and work queues (read from its API when ``orchestrator.api_url`` is set),
so a user can copy the id an action needs without leaving the form.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import httpx

__all__ = ["Named", "OrchestratorNames", "Picks"]

# Each list is one page (Prefect serves at most 200 a page).
_PAGE = 200
_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class Named:
    """Something to pick: its name, a detail (a deployment's flow, a queue's pool) and id."""

    name: str
    id: str
    detail: str = ""


@dataclass(slots=True)
class Picks:
    """What the orchestrator has, or why it could not be read."""

    deployments: list[Named] = field(default_factory=list)
    work_pools: list[Named] = field(default_factory=list)
    work_queues: list[Named] = field(default_factory=list)
    error: str | None = None


class OrchestratorNames:
    """Reads the pick lists from ``api_url`` (``api_key`` as a bearer token)."""

    def __init__(self, api_url: str, api_key: str | None = None) -> None:
        self.api_url = api_url.rstrip("/")
        self._headers = {"Accept": "application/json", "User-Agent": "marmot-console"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"

    async def picks(self) -> Picks:
        """Deployments, work pools and work queues, by name; an unreachable or failing
        orchestrator gives empty lists and the reason."""
        try:
            async with httpx.AsyncClient(
                base_url=self.api_url + "/", headers=self._headers, timeout=_TIMEOUT_S
            ) as http:
                deployments, pools, queues = await asyncio.gather(
                    _page(http, "deployments/filter"),
                    _page(http, "work_pools/filter"),
                    _page(http, "work_queues/filter"),
                )
        except (httpx.HTTPError, ValueError) as exc:
            return Picks(error=f"the orchestrator at {self.api_url} could not be read: {exc}")
        return Picks(
            deployments=[Named(str(d.get("name")), str(d.get("id"))) for d in deployments],
            work_pools=[Named(str(p.get("name")), str(p.get("id"))) for p in pools],
            work_queues=[
                Named(str(q.get("name")), str(q.get("id")), str(q.get("work_pool_name") or ""))
                for q in queues
            ],
        )


async def _page(http: httpx.AsyncClient, path: str) -> list[dict[str, Any]]:
    response = await http.post(path, json={"limit": _PAGE})
    response.raise_for_status()
    body = response.json()
    if not isinstance(body, list):
        raise ValueError(f"POST {path} answered {type(body).__name__} JSON, not a list")
    return sorted((x for x in body if isinstance(x, dict)), key=lambda x: str(x.get("name")))
