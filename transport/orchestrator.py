"""An async client for a Prefect-compatible REST API: the orchestrator actions act through it.

Every method makes one request and returns the parsed JSON. Failures are
reported in the executor's terms: what may pass (no connection, a time-out,
HTTP 5xx or 429) raises ``TransientFailure``, with the server's
``Retry-After`` when it gives one; anything else the server refuses raises
``ActionFailed`` with Prefect's ``detail``, and a 404 raises
:class:`OrchestratorNotFound` naming the missing object.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote
from uuid import UUID

import httpx

from marmot.actors.action_runs import ActionFailed, TransientFailure
from marmot.engine.errors import NotFound
from marmot.transport.prefect_api import retry_after_s

__all__ = [
    "OrchestratorClient",
    "OrchestratorNotFound",
    "OrchestrationRefused",
    "automation_headers",
]


def automation_headers(automation_id: UUID, name: str) -> dict[str, str]:
    """The headers by which Prefect's API records an automation as who created or
    changed something (``created_by`` of type ``AUTOMATION``, with its id and name),
    as Prefect's own actions send them (the name base64-encoded)."""
    return {
        "Prefect-Automation-ID": str(automation_id),
        "Prefect-Automation-Name": base64.b64encode(name.encode()).decode(),
    }


# Prefect's error bodies can carry whole validation reports; a reason stays readable.
_MAX_DETAIL_CHARS = 300


class OrchestratorNotFound(ActionFailed, NotFound):
    """Raised when the orchestrator has no such object (HTTP 404).

    It is both an ``ActionFailed`` (the action gives up) and a ``NotFound``
    (so callers that look things up, such as the block resolver, can fall back).
    """


class OrchestrationRefused(ActionFailed):
    """Raised when Prefect's orchestration rules reject or abort a state change."""

    def __init__(self, reason: str, status: str = "REJECT") -> None:
        super().__init__(reason)
        self.status = status


class OrchestratorClient:
    """Talks to ``api_url`` (e.g. ``http://127.0.0.1:4200/api``) over one ``httpx.AsyncClient``.

    ``api_key`` is sent as ``Authorization: Bearer`` (Prefect Cloud), else
    ``auth_string`` (``user:password``) as basic auth; ``timeout_s`` bounds each
    request. ``transport`` replaces the network (tests only).
    """

    def __init__(
        self,
        api_url: str,
        *,
        api_key: str | None = None,
        auth_string: str | None = None,
        timeout_s: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        headers = {"Accept": "application/json", "User-Agent": "marmot"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        elif auth_string:
            # A server behind PREFECT_SERVER_API_AUTH_STRING: HTTP basic auth.
            token = base64.b64encode(auth_string.encode("utf-8")).decode("ascii")
            headers["Authorization"] = f"Basic {token}"
        self.api_url = api_url.rstrip("/")
        self.timeout_s = timeout_s
        self._http = httpx.AsyncClient(
            base_url=self.api_url + "/",
            headers=headers,
            timeout=timeout_s,
            follow_redirects=False,
            transport=transport,
        )

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    # -- flow runs ---------------------------------------------------------

    async def set_flow_run_state(
        self, id: UUID, state: Mapping[str, Any], force: bool = False
    ) -> dict[str, Any]:
        """Propose ``state`` (Prefect's ``StateCreate`` JSON) for a flow run.

        Returns Prefect's orchestration result (``status``, ``details``, the
        ``state`` now in force) when it is accepted; raises
        :class:`OrchestrationRefused` when it is rejected or aborted, and
        ``TransientFailure`` (after Prefect's delay) when it is told to wait.
        """
        body = await self._request(
            "POST",
            f"flow_runs/{id}/set_state",
            what=f"flow run {id}",
            json={"state": dict(state), "force": force},
        )
        return _accepted(body, f"flow run {id}")

    async def resume_flow_run(self, id: UUID) -> dict[str, Any]:
        """Resume a paused or suspended flow run; the result reads as ``set_flow_run_state``'s."""
        body = await self._request("POST", f"flow_runs/{id}/resume", what=f"flow run {id}")
        return _accepted(body, f"flow run {id}")

    async def delete_flow_run(self, id: UUID) -> dict[str, Any]:
        """Delete a flow run; returns ``{}``."""
        return await self._request("DELETE", f"flow_runs/{id}", what=f"flow run {id}")

    async def read_flow_run(self, id: UUID) -> dict[str, Any]:
        """The flow run's JSON."""
        return await self._request("GET", f"flow_runs/{id}", what=f"flow run {id}")

    async def read_flow(self, id: UUID) -> dict[str, Any]:
        """The flow's JSON."""
        return await self._request("GET", f"flows/{id}", what=f"flow {id}")

    # -- deployments -------------------------------------------------------

    async def read_deployment(self, id: UUID) -> dict[str, Any]:
        """The deployment's JSON."""
        return await self._request("GET", f"deployments/{id}", what=f"deployment {id}")

    async def filter_deployments(
        self, names: Sequence[str], *, limit: int = 200, offset: int = 0
    ) -> list[dict[str, Any]]:
        """One page of the deployments whose name is one of ``names``
        (``POST /deployments/filter``; Prefect allows at most 200 a page)."""
        body = {"deployments": {"name": {"any_": list(names)}}, "limit": limit, "offset": offset}
        found = await self._request_any("POST", "deployments/filter", what="deployments", json=body)
        if not isinstance(found, list):
            raise ActionFailed(
                f"orchestrator answered POST {self.api_url}/deployments/filter with "
                f"{type(found).__name__} JSON, not a list"
            )
        return [d for d in found if isinstance(d, dict)]

    async def create_flow_run_from_deployment(
        self, id: UUID, body: Mapping[str, Any], *, created_by: Mapping[str, str] | None = None
    ) -> dict[str, Any]:
        """Create a flow run of a deployment from Prefect's ``DeploymentFlowRunCreate``
        JSON; returns the flow run (the existing one when its idempotency key was used).
        ``created_by``: request headers naming who creates it (``automation_headers``)."""
        return await self._request(
            "POST",
            f"deployments/{id}/create_flow_run",
            what=f"deployment {id}",
            json=dict(body),
            headers=created_by,
        )

    async def pause_deployment(self, id: UUID) -> dict[str, Any]:
        """Pause a deployment's schedules; returns ``{}``."""
        return await self._request(
            "POST", f"deployments/{id}/pause_deployment", what=f"deployment {id}"
        )

    async def resume_deployment(self, id: UUID) -> dict[str, Any]:
        """Resume a deployment's schedules; returns ``{}``."""
        return await self._request(
            "POST", f"deployments/{id}/resume_deployment", what=f"deployment {id}"
        )

    # -- work pools and queues ---------------------------------------------

    async def read_work_pool(self, id: UUID) -> dict[str, Any]:
        """The work pool with this id (Prefect addresses pools by name, so it is filtered for)."""
        pools = await self._request_any(
            "POST",
            "work_pools/filter",
            what="work pools",
            json={"work_pools": {"id": {"any_": [str(id)]}}, "limit": 1},
        )
        if isinstance(pools, list) and pools and isinstance(pools[0], dict):
            return pools[0]
        raise OrchestratorNotFound(f"work pool {id} was not found on the orchestrator")

    async def update_work_pool(self, name: str, is_paused: bool) -> dict[str, Any]:
        """Pause or resume the work pool called ``name``; returns ``{}``."""
        return await self._request(
            "PATCH",
            f"work_pools/{quote(name, safe='')}",
            what=f"work pool {name!r}",
            json={"is_paused": is_paused},
        )

    async def read_work_queue(self, id: UUID) -> dict[str, Any]:
        """The work queue's JSON."""
        return await self._request("GET", f"work_queues/{id}", what=f"work queue {id}")

    async def update_work_queue(self, id: UUID, is_paused: bool) -> dict[str, Any]:
        """Pause or resume a work queue; returns ``{}``."""
        return await self._request(
            "PATCH", f"work_queues/{id}", what=f"work queue {id}", json={"is_paused": is_paused}
        )

    # -- blocks --------------------------------------------------------------

    async def read_block_document(self, id: UUID, /) -> dict[str, Any]:
        """The block document with its secrets in clear (``include_secrets=true``);
        raises :class:`OrchestratorNotFound` (a ``NotFound``) when there is none."""
        return await self._request(
            "GET",
            f"block_documents/{id}",
            what=f"block document {id}",
            params={"include_secrets": "true"},
        )

    # -- plumbing --------------------------------------------------------------

    async def _request(
        self,
        method: str,
        path: str,
        *,
        what: str,
        json: Any = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        body = await self._request_any(
            method, path, what=what, json=json, params=params, headers=headers
        )
        if body is None:
            return {}
        if not isinstance(body, dict):
            raise ActionFailed(
                f"orchestrator answered {method} /{path} with {type(body).__name__} JSON, "
                "not an object"
            )
        return body

    async def _request_any(
        self,
        method: str,
        path: str,
        *,
        what: str,
        json: Any = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        where = f"{method} {self.api_url}/{path}"
        try:
            response = await self._http.request(
                method, path, json=json, params=params, headers=headers
            )
        except httpx.TimeoutException:
            raise TransientFailure(
                f"orchestrator did not answer {where} within {self.timeout_s:g} s"
            ) from None
        except httpx.TransportError as exc:
            raise TransientFailure(
                f"orchestrator unreachable ({where}): {str(exc) or type(exc).__name__}"
            ) from None
        _raise_for_status(response, where, what)
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise ActionFailed(
                f"orchestrator answered {where} with a body that is not JSON"
            ) from None


def _raise_for_status(response: httpx.Response, where: str, what: str) -> None:
    status = response.status_code
    if status < 300:
        return
    detail = _detail(response)
    said = f"HTTP {status}" + (f": {detail}" if detail else "")
    if status == 429 or status >= 500:
        retry_after = retry_after_s(response) if status in (429, 503) else None
        raise TransientFailure(f"orchestrator answered {where} with {said}", retry_after)
    if status == 404:
        raise OrchestratorNotFound(f"{what} was not found on the orchestrator ({said})")
    if status in (401, 403):
        raise ActionFailed(f"orchestrator refused {where} ({said}); check orchestrator.api_key")
    raise ActionFailed(f"orchestrator refused {where} ({said})")


def _detail(response: httpx.Response) -> str:
    """Prefect's reason for an error: ``detail``, or ``exception_message`` and its report."""
    try:
        body = response.json()
    except ValueError:
        return _clip(response.text.strip())
    if not isinstance(body, dict):
        return _clip(json.dumps(body))
    parts: list[str] = []
    for key in ("detail", "exception_message", "exception_detail"):
        value = body.get(key)
        if isinstance(value, str) and value:
            parts.append(value)
        elif isinstance(value, list) and value:
            parts.append(_validation_report(value))
    return _clip("; ".join(parts) if parts else json.dumps(body))


def _validation_report(errors: list[Any]) -> str:
    """FastAPI's validation errors as ``body.state.type: Input should be ...``."""
    lines: list[str] = []
    for error in errors:
        if isinstance(error, dict):
            loc = ".".join(str(p) for p in error.get("loc", ()))
            message = str(error.get("msg", ""))
            lines.append(f"{loc}: {message}" if loc else message)
        else:
            lines.append(str(error))
    return "; ".join(lines)


def _clip(text: str) -> str:
    if len(text) <= _MAX_DETAIL_CHARS:
        return text
    return text[: _MAX_DETAIL_CHARS - 1] + "…"


def _accepted(body: dict[str, Any], subject: str) -> dict[str, Any]:
    """Read Prefect's orchestration result: return it when accepted, raise otherwise."""
    status = str(body.get("status", "")).upper()
    raw_details = body.get("details")
    details: dict[str, Any] = raw_details if isinstance(raw_details, dict) else {}
    reason = details.get("reason") or "no reason given"
    if status == "ACCEPT":
        return body
    if status in ("REJECT", "ABORT"):
        verb = "rejected" if status == "REJECT" else "aborted"
        raise OrchestrationRefused(
            f"the orchestrator {verb} the state change of {subject}: {reason}", status
        )
    if status == "WAIT":
        delay = details.get("delay_seconds")
        delay_s = float(delay) if isinstance(delay, int | float) and delay >= 0 else None
        raise TransientFailure(
            f"the orchestrator asked to wait before changing the state of {subject}: {reason}",
            delay_s,
        )
    raise ActionFailed(f"the orchestrator answered with an unknown status {status!r} for {subject}")
