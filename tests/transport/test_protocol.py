"""The RPC contract is written once: every method is served and on both clients."""

from __future__ import annotations

import inspect

from marmot.transport.api import Api
from marmot.transport.client import AsyncClient, Client, Requests
from marmot.transport.protocol import METHODS


def test_every_method_is_served() -> None:
    served = Api.implementations(Api.__new__(Api))
    assert set(served) == set(METHODS)


def test_every_method_is_on_both_clients_with_the_same_signature() -> None:
    for method in METHODS.values():
        name = method.client_name
        build = getattr(Requests, name)
        sync, asynchronous = getattr(Client, name), getattr(AsyncClient, name)
        assert inspect.iscoroutinefunction(asynchronous), name
        assert not inspect.iscoroutinefunction(sync), name
        expected = list(inspect.signature(build).parameters)
        for client_method in (sync, asynchronous):
            assert list(inspect.signature(client_method).parameters)[1:] == expected, name


def test_each_request_names_its_method() -> None:
    request = Requests.read_automation("0c1d2e3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f")
    assert request.method is METHODS["automations.read"]
    assert request.params == {"id": "0c1d2e3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f"}
