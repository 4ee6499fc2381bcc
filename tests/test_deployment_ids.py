"""Looking deployment ids up on a Prefect API: one request for every name, the
entrypoint deciding between flows, explicit ids, and failures that say what to do.

The Prefect API is stood in for by ``httpx.MockTransport`` here; the real server
is used in ``tests/integration/test_deploy_triggers.py``.
"""

from __future__ import annotations

import json
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest

from marmot.deployment_ids import (
    DeploymentLookupFailed,
    DeploymentRef,
    PrefectDeploymentResolver,
)
from marmot.engine.errors import NotFound, ValidationFailed

API = "http://prefect.test/api"


class FakePrefect:
    """Answers ``POST /deployments/filter`` from a list of deployments, recording requests."""

    def __init__(self, deployments: list[dict[str, Any]], status: int = 200) -> None:
        self.deployments = deployments
        self.status = status
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.status != 200:
            return httpx.Response(self.status, json={"detail": "nope"})
        assert request.url.path == "/api/deployments/filter"
        body = json.loads(request.content)
        names = body["deployments"]["name"]["any_"]
        found = [d for d in self.deployments if d["name"] in names]
        return httpx.Response(200, json=found[body["offset"] : body["offset"] + body["limit"]])

    def resolver(self, **kwargs: Any) -> PrefectDeploymentResolver:
        return PrefectDeploymentResolver(API, transport=httpx.MockTransport(self), **kwargs)


def deployment(name: str, entrypoint: str | None = None) -> dict[str, Any]:
    return {"id": str(uuid4()), "name": name, "entrypoint": entrypoint, "flow_id": str(uuid4())}


def test_all_names_are_asked_for_in_one_request_with_the_key() -> None:
    etl, report = deployment("etl", "etl.py:etl"), deployment("report", "r.py:r")
    prefect = FakePrefect([etl, report, deployment("other")])
    refs = [DeploymentRef("etl", "etl.py:etl"), DeploymentRef("report", "r.py:r")]

    found = prefect.resolver(api_key="secret").resolve(refs)

    assert found == {refs[0]: UUID(etl["id"]), refs[1]: UUID(report["id"])}
    (request,) = prefect.requests
    assert request.headers["authorization"] == "Bearer secret"
    assert sorted(json.loads(request.content)["deployments"]["name"]["any_"]) == ["etl", "report"]


def test_the_entrypoint_chooses_between_flows_with_the_same_deployment_name() -> None:
    first, second = deployment("default", "a.py:a"), deployment("default", "flows/b.py:b")
    prefect = FakePrefect([first, second])
    ref = DeploymentRef("default", "./flows/b.py:b")
    assert prefect.resolver().resolve([ref]) == {ref: UUID(second["id"])}


def test_an_unresolvable_choice_lists_the_candidates() -> None:
    first, second = deployment("default", "a.py:a"), deployment("default", "b.py:b")
    prefect = FakePrefect([first, second])
    with pytest.raises(ValidationFailed, match="ambiguous") as caught:
        prefect.resolver().resolve([DeploymentRef("default", "c.py:c")])
    assert first["id"] in str(caught.value) and second["id"] in str(caught.value)
    assert "--deployment-id default=UUID" in str(caught.value)


def test_a_single_deployment_of_that_name_is_taken() -> None:
    only = deployment("etl", "elsewhere/etl.py:etl")
    ref = DeploymentRef("etl", "etl.py:etl")
    assert FakePrefect([only]).resolver().resolve([ref]) == {ref: UUID(only["id"])}


def test_a_deployment_the_api_does_not_have_is_not_found() -> None:
    with pytest.raises(NotFound) as caught:
        FakePrefect([deployment("etl")]).resolver().resolve([DeploymentRef("nightly", "n.py:n")])
    assert str(caught.value) == (
        f"deployment 'nightly' (entrypoint n.py:n) not found on the Prefect API at {API}: "
        "run `prefect deploy` first"
    )


def test_given_ids_are_used_without_a_request() -> None:
    prefect = FakePrefect([])
    given = uuid4()
    ref = DeploymentRef("etl", "etl.py:etl")
    assert prefect.resolver(ids={"etl": given}).resolve([ref]) == {ref: given}
    assert prefect.requests == []


def test_a_given_id_for_a_name_two_flows_share_is_refused() -> None:
    refs = [DeploymentRef("default", "a.py:a"), DeploymentRef("default", "b.py:b")]
    with pytest.raises(ValidationFailed, match="fits 2 deployments"):
        FakePrefect([]).resolver(ids={"default": uuid4()}).resolve(refs)


@pytest.mark.parametrize("status", [401, 500])
def test_an_api_that_refuses_fails_the_lookup(status: int) -> None:
    with pytest.raises(DeploymentLookupFailed, match=f"HTTP {status}: nope"):
        FakePrefect([], status=status).resolver().resolve([DeploymentRef("etl")])


def test_results_are_read_page_after_page() -> None:
    many = [deployment("default", f"f{i}.py:f") for i in range(250)]
    prefect = FakePrefect(many)
    ref = DeploymentRef("default", "f249.py:f")
    assert prefect.resolver().resolve([ref]) == {ref: UUID(many[249]["id"])}
    assert [json.loads(r.content)["offset"] for r in prefect.requests] == [0, 200]


def test_url_and_key_default_to_prefects_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREFECT_API_URL", API)
    monkeypatch.setenv("PREFECT_API_KEY", "from-env")
    etl = deployment("etl")
    prefect = FakePrefect([etl])
    resolver = PrefectDeploymentResolver(transport=httpx.MockTransport(prefect))
    assert resolver.api_url == API
    assert resolver.resolve([DeploymentRef("etl")]) == {DeploymentRef("etl"): UUID(etl["id"])}
    assert prefect.requests[0].headers["authorization"] == "Bearer from-env"


def test_without_an_api_a_missing_id_says_how_to_give_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    with pytest.raises(ValidationFailed) as caught:
        PrefectDeploymentResolver().resolve([DeploymentRef("etl", "etl.py:etl")])
    message = str(caught.value)
    assert "PREFECT_API_URL" in message and "--deployment-id etl=UUID" in message
