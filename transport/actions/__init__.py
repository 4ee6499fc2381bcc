"""The action runners: what each Prefect action type does, against real services.

:func:`build_runners` is the factory the daemon hands to the executor pool;
it runs inside each executor actor, so the network clients it opens (httpx,
the orchestrator client) live there.
"""

from __future__ import annotations

from marmot.actors.action_runs import Runner, RunnerSet
from marmot.actors.store import Store
from marmot.config import MarmotConfig

__all__ = ["build_runners"]


async def build_runners(config: MarmotConfig, store: Store) -> RunnerSet:
    """Every action type's runner, sharing one HTTP client and one orchestrator client."""
    # Imported here: the runners (httpx, Jinja, SMTP) load in the executor
    # actors only, never in the daemon's own process.
    from marmot.transport.actions.notifications import BlockResolver, notification_runners
    from marmot.transport.actions.orchestration import orchestration_runners
    from marmot.transport.actions.registry import registry_runners
    from marmot.transport.actions.rendering import Renderer
    from marmot.transport.orchestrator import OrchestratorClient

    executors, settings = config.executors, config.orchestrator
    from marmot.transport.actions.pooled_http import action_client

    # httpx's interface over aiohttp's pool: a third of the CPU per request.
    http = action_client(executors.action_timeout_s)
    orchestrator = (
        OrchestratorClient(
            settings.api_url,
            api_key=settings.api_key.get_secret_value() if settings.api_key else None,
            auth_string=settings.auth_string.get_secret_value() if settings.auth_string else None,
            timeout_s=executors.action_timeout_s,
        )
        if settings.api_url
        else None
    )
    renderer = Renderer(config, orchestrator)
    blocks = BlockResolver(store, orchestrator)
    runners: dict[str, Runner] = {
        **orchestration_runners(orchestrator, renderer),
        **notification_runners(blocks, renderer, http, executors),
        **registry_runners(store, renderer),
    }

    async def close() -> None:
        await http.aclose()
        if orchestrator is not None:
            await orchestrator.aclose()

    return RunnerSet(runners, close)
