"""Ray in one place: starting or joining Ray, and every actor's options.

Other modules get actor handles from ``RayRuntime``; none of them calls
``ray.remote`` or sets actor options itself (STYLE.md).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import ray

from marmot.actors.automation import AutomationHost
from marmot.actors.timer import TimerHost

log = logging.getLogger(__name__)

# DESIGN.md, measured here: an actor is a ~47 MB process using ~0.6 % of a
# core when idle; CPU makes ~120 actors the practical limit on 2 cores.
ACTOR_MEMORY_BYTES = 47 * 1024 * 1024
ACTORS_PER_CORE = 60

# Read by each Ray worker at start-up: the nice value of its task thread.
WORKER_NICENESS_ENV = "RAY_worker_niceness"

AutomationActor = ray.remote(AutomationHost)
TimerActor = ray.remote(TimerHost)


@dataclass(frozen=True, slots=True)
class RaySettings:
    """How to reach Ray: ``address`` None starts an embedded local instance."""

    address: str | None = None
    namespace: str = "marmot"
    num_cpus: int | None = None
    object_store_memory_mb: int = 200
    log_to_driver: bool = False


class RayRuntime:
    """Owns the connection to Ray and creates Marmot's actors."""

    def __init__(self, settings: RaySettings) -> None:
        self.settings = settings
        self._started_here = False

    @property
    def namespace(self) -> str:
        """The Ray namespace every Marmot actor lives in."""
        return self.settings.namespace

    def start(self) -> None:
        """Start an embedded Ray, or join the configured cluster; no-op if connected."""
        if ray.is_initialized():
            return
        s = self.settings
        options: dict[str, Any] = {
            "namespace": s.namespace,
            "log_to_driver": s.log_to_driver,
            "logging_level": logging.WARNING,
        }
        if s.address is None:
            # "local" never joins a cluster found in the environment (DESIGN.md).
            options.update(
                address="local",
                include_dashboard=False,
                object_store_memory=s.object_store_memory_mb * 1024 * 1024,
            )
            if s.num_cpus is not None:
                options["num_cpus"] = s.num_cpus
        else:
            options["address"] = s.address
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        if s.address is None:
            # Ray runs its workers' task threads at nice 15, below the daemon:
            # on a busy machine the automation actors and the timer then wait
            # for the CPU behind everything else (measured on 2 cores at 2,000
            # events/s: an actor call ~12 ms instead of ~3 ms). An embedded Ray
            # is Marmot's alone, so its workers run at the daemon's priority;
            # executors lower their own (executors.nice). Set in the environment
            # the raylet and its workers inherit; an explicit value wins.
            os.environ.setdefault(WORKER_NICENESS_ENV, "0")
        ray.init(**options)
        self._started_here = True
        log.info("ray started", extra={"address": s.address or "local"})

    def shutdown(self) -> None:
        """Disconnect from Ray (stopping it if it was started here)."""
        if self._started_here and ray.is_initialized():
            ray.shutdown()
        self._started_here = False

    def automation_actor(self, name: str, *args: Any) -> Any:
        """A new automation actor (no CPU reserved; Ray restarts it if it dies).

        Calls in flight or sent while it restarts are retried on the new one
        (which answers that it lost its automations; the daemon recovers them).
        """
        return AutomationActor.options(
            name=name,
            namespace=self.namespace,
            num_cpus=0,
            max_restarts=-1,
            max_task_retries=-1,
            max_concurrency=1,
            get_if_exists=False,
        ).remote(*args)

    def timer_actor(self, name: str = "timer") -> Any:
        """The timer actor (async, so its sleep never blocks its stream)."""
        return TimerActor.options(
            name=name,
            namespace=self.namespace,
            num_cpus=0,
            max_restarts=-1,
            max_task_retries=-1,
            max_concurrency=1000,
        ).remote()

    def executor_actor(self, name: str, cls: type, *args: Any) -> Any:
        """An action executor built from ``cls`` (several run at once per actor)."""
        remote_cls: Any = ray.remote(cls)
        return remote_cls.options(
            name=name,
            namespace=self.namespace,
            num_cpus=0,
            max_restarts=-1,
            max_task_retries=-1,
            max_concurrency=1000,
        ).remote(*args)

    def kill(self, handle: Any) -> None:
        """Stop an actor for good (no restart)."""
        ray.kill(handle, no_restart=True)

    def capacity(self, actors_in_use: int) -> dict[str, Any]:
        """What this Ray node (or cluster) can still take, in automation actors."""
        resources = ray.cluster_resources()  # type: ignore[no-untyped-call]
        cpus = float(resources.get("CPU", os.cpu_count() or 1))
        memory = float(resources.get("memory", 0.0))
        by_cpu = int(cpus * ACTORS_PER_CORE)
        by_memory = int(memory // ACTOR_MEMORY_BYTES) if memory else by_cpu
        limit = min(by_cpu, by_memory)
        return {
            "nodes": len([n for n in ray.nodes() if n.get("Alive")]),  # type: ignore[no-untyped-call]
            "cpus": cpus,
            "memory_bytes": memory,
            "actor_limit": limit,
            "actors_in_use": actors_in_use,
            "actors_free": max(limit - actors_in_use, 0),
        }
