"""The action runners: what each Prefect action type does, against real services.

:func:`build_runners` is the factory the daemon hands to the executor pool;
it runs inside each executor actor, so the network clients it opens (httpx,
the orchestrator client) live there.
"""

from __future__ import annotations

from marmot.actors.actionkit import ActionSettings, Runner, RunnerSet
from marmot.actors.store import Store
from marmot.config import MarmotConfig

__all__ = ["action_settings", "build_runners"]


def action_settings(config: MarmotConfig) -> ActionSettings:
    """The part of the daemon's config that actions run with."""
    executors, limits, orchestrator = config.executors, config.limits, config.orchestrator
    return ActionSettings(
        orchestrator_url=orchestrator.api_url,
        orchestrator_key=(
            orchestrator.api_key.get_secret_value() if orchestrator.api_key else None
        ),
        ui_url=orchestrator.ui_url,
        action_timeout_s=executors.action_timeout_s,
        max_retries=executors.max_retries,
        backoff_base_s=executors.backoff_base_s,
        backoff_max_s=executors.backoff_max_s,
        template_max_bytes=limits.template_max_bytes,
        template_timeout_s=limits.template_timeout_s,
        max_concurrent_actions=executors.max_concurrent_actions,
        nice=executors.nice,
    )


async def build_runners(settings: ActionSettings, store: Store) -> RunnerSet:
    """Every action type's runner, sharing one HTTP client and one orchestrator client."""
    # Imported here: the runners (httpx, Jinja, SMTP) load in the executor
    # actors only, never in the daemon's own process.
    import httpx

    from marmot.transport.actions.notifications import BlockResolver, notification_runners
    from marmot.transport.actions.orchestration import orchestration_runners
    from marmot.transport.actions.registry import registry_runners
    from marmot.transport.actions.rendering import Renderer
    from marmot.transport.orchestrator import OrchestratorClient

    http = httpx.AsyncClient(timeout=settings.action_timeout_s, follow_redirects=False)
    orchestrator = (
        OrchestratorClient(
            settings.orchestrator_url,
            api_key=settings.orchestrator_key,
            timeout_s=settings.action_timeout_s,
        )
        if settings.orchestrator_url
        else None
    )
    renderer = Renderer(settings, orchestrator)
    blocks = BlockResolver(store, orchestrator)
    runners: dict[str, Runner] = {
        **orchestration_runners(orchestrator, renderer),
        **notification_runners(blocks, renderer, http, settings),
        **registry_runners(store, renderer),
    }

    async def close() -> None:
        await http.aclose()
        if orchestrator is not None:
            await orchestrator.aclose()

    return RunnerSet(runners, close)
