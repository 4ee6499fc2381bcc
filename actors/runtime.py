"""Ray in one place: starting or joining Ray, every actor's options, typed actor references.

Other modules never call ``ray.remote`` or ``.remote(...)`` themselves
(STYLE.md): ``RayRuntime`` creates the actors and hands out references
(``AutomationRef``, ``TimerRef``, ``ExecutorRef``) whose methods submit the
call at once (so calls on one actor keep their order) and return a ``Reply``
that, awaited, unpacks the actor's answer into its type.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from pathlib import Path
from typing import Any, Generic, TypeVar

import ray

from marmot.actors.automation import AutomationHost
from marmot.actors.executor import ExecutorHost, ExecutorResults
from marmot.actors.timer import TimerHost
from marmot.actors.wire import Outcome
from marmot.config import RayConfig
from marmot.engine.errors import MarmotError, RayUnavailable
from marmot.engine.models.explain import Explanation

log = logging.getLogger(__name__)

__all__ = [
    "AutomationRef",
    "ExecutorRef",
    "RayRuntime",
    "Reply",
    "TimerRef",
]

# Measured here (2026-12-06, /proc/PID/smaps_rollup of a serving daemon's
# automation actors): 94 MB resident each, of which ~43 MB are library pages
# shared with every other Ray worker and 51 MB its own (USS; PSS 54 MB). The
# unique part is what each further actor costs. An actor uses ~0.6 % of a core
# when idle; CPU makes ~120 actors the practical limit on 2 cores.
ACTOR_MEMORY_BYTES = 52 * 1024 * 1024
ACTOR_RESIDENT_BYTES = 94 * 1024 * 1024
ACTORS_PER_CORE = 60
# How long the cluster's resources, as ``capacity`` reads them from Ray's GCS,
# are taken as they were (status is polled; a node joining shows within this).
CLUSTER_CACHE_S = 2.0

# Read by each Ray worker at start-up: the nice value of its task thread.
WORKER_NICENESS_ENV = "RAY_worker_niceness"
# Read by every process of Ray: whether its event loops time each handler.
EVENT_STATS_ENV = "RAY_event_stats"
AUTH_MODE_ENV = "RAY_AUTH_MODE"
# Where Ray announces that a new local cluster uses token authentication.
_TOKEN_NOTICE_LOGGER = "ray._private.authentication.authentication_token_setup"


def _is_not_token_notice(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith("Token authentication is enabled")


def _quiet_token_notice() -> None:
    """Drop Ray's notice that token authentication is on (its warnings stay)."""
    notices = logging.getLogger(_TOKEN_NOTICE_LOGGER)
    if _is_not_token_notice not in notices.filters:
        notices.addFilter(_is_not_token_notice)


def _join_failure(address: str, exc: BaseException) -> str:
    """Why joining the cluster at ``address`` failed, and what to do about it."""
    reasons: list[BaseException] = []
    cause: BaseException | None = exc
    while cause is not None and len(reasons) < 10:
        reasons.append(cause)
        cause = cause.__cause__ or cause.__context__
    if any("InvalidAuthToken" in str(r) or "Authentication" in type(r).__name__ for r in reasons):
        mode = os.environ.get(AUTH_MODE_ENV)
        hint = (
            f"set {AUTH_MODE_ENV}=token for marmot serve (Ray turns token authentication "
            "on only for a cluster it finds itself, never for an address it is given)"
            if mode != "token"
            else "give marmot serve the cluster's token (~/.ray/auth_token, "
            "RAY_AUTH_TOKEN_PATH or RAY_AUTH_TOKEN)"
        )
        return f"cannot join the Ray cluster at {address}: it requires its token: {hint}"
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"cannot join the Ray cluster at {address} (ray.address): {first_line}"


def _private_token() -> None:
    """Make Ray's token file readable by its owner alone (Ray writes it 0644, so any
    local user could read it and join the cluster)."""
    token = Path.home() / ".ray" / "auth_token"
    with contextlib.suppress(OSError):
        if token.stat().st_mode & 0o077:
            token.chmod(0o600)


_AutomationActor = ray.remote(AutomationHost)
_TimerActor = ray.remote(TimerHost)
_ExecutorActor = ray.remote(ExecutorHost)


def _call(function: Callable[..., Any], *args: Any) -> Any:
    return function(*args)


# Work the daemon hands off its loop and its process (dry runs over the log):
# no CPU reserved, never retried (a failure is reported, not repeated).
_Offloaded = ray.remote(num_cpus=0, max_retries=0)(_call)


def _stream(function: Callable[..., Iterator[Any]], *args: Any) -> Iterator[Any]:
    yield from function(*args)


_Streamed = ray.remote(num_cpus=0, max_retries=0)(_stream)


def _cause(exc: Exception) -> Exception:
    """A task's own ``MarmotError`` (NotFound, ...) rather than Ray's wrapper of it,
    so the caller's error says what went wrong, with its code."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, MarmotError) else exc


async def _task_result(ref: Any) -> Any:
    try:
        return await ref
    except ray.exceptions.RayTaskError as exc:
        raise _cause(exc) from None


async def _task_items(stream: Any) -> AsyncIterator[Any]:
    try:
        async for ref in stream:
            yield await ref
    except ray.exceptions.RayTaskError as exc:
        raise _cause(exc) from None


T = TypeVar("T")


def _same(value: Any) -> Any:
    return value


async def _items(stream: Any, decode: Callable[[Any], T]) -> AsyncIterator[T]:
    async for ref in stream:
        yield decode(await ref)


class Reply(Generic[T]):
    """An actor call already submitted; awaiting it gives the decoded answer."""

    __slots__ = ("_decode", "ref")

    def __init__(self, ref: Any, decode: Callable[[Any], T] = _same) -> None:
        self.ref = ref
        self._decode = decode

    def __await__(self) -> Generator[Any, None, T]:
        return self._wait().__await__()

    async def _wait(self) -> T:
        return self._decode(await self.ref)


class AutomationRef:
    """An automation actor (``AutomationHost``): evaluates the automations placed in it."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle
        # Calls made that may change what the actor holds (all but checkpoints
        # and reads), and the (safe sequence number, such calls) of its last
        # complete checkpoint: the daemon skips a checkpoint that would write
        # nothing (Placement).
        self.changes = 0
        self.checkpointed: tuple[int, int] | None = None

    def ping(self) -> Reply[int]:
        """How many automations it hosts."""
        return Reply(self.handle.ping.remote())

    def recover(self, document: str, now_us: int, held: list[int]) -> Reply[Outcome]:
        """Host an automation from its checkpoint, replaying the log since (but the
        followers the router holds back, ``held`` by sequence number)."""
        self.changes += 1
        return Reply(self.handle.recover.remote(document, now_us, held), Outcome.unpack)

    def load_many(self, documents: list[str]) -> Reply[dict[str, int | None]]:
        """Host automations fresh; each one's next deadline (µs, -1 for due now) or None."""
        self.changes += 1
        return Reply(self.handle.load_many.remote(documents))

    def recover_many(self, documents: list[str], now_us: int, held: list[int]) -> Reply[Outcome]:
        """``recover`` for many automations: one outcome for them all."""
        self.changes += 1
        return Reply(self.handle.recover_many.remote(documents, now_us, held), Outcome.unpack)

    def unload(self, automation_id: str) -> Reply[bool]:
        """Stop hosting an automation."""
        self.changes += 1
        return Reply(self.handle.unload.remote(automation_id))

    def apply(self, blob: bytes) -> Reply[Outcome]:
        """Evaluate a packed batch of events (``wire.pack_batch``)."""
        self.changes += 1
        return Reply(self.handle.apply.remote(blob), Outcome.unpack)

    def expire(self, as_of_us: int, now_us: int, automation_ids: list[str]) -> Reply[Outcome]:
        """Proactive evaluation of some of its automations at ``as_of_us``."""
        self.changes += 1
        return Reply(self.handle.expire.remote(as_of_us, now_us, automation_ids), Outcome.unpack)

    def checkpoint(self, upto: int) -> Reply[int]:
        """Checkpoint the automations whose state changed; how many were saved."""
        return Reply(self.handle.checkpoint.remote(upto))

    def checkpoint_part(self, upto: int, limit: int) -> Reply[tuple[int, int]]:
        """Checkpoint at most ``limit`` of them; how many were saved and how many are left."""
        return Reply(self.handle.checkpoint_part.remote(upto, limit))

    def explain(self, automation_id: str, limit: int, offset: int) -> Reply[Explanation | None]:
        """An automation's live state (a page of buckets per trigger), or None when it
        is not hosted here."""
        return Reply(self.handle.explain.remote(automation_id, limit, offset))

    def state(self, automation_id: str) -> Reply[dict[str, Any] | None]:
        """A copy of an automation's engine state (for a dry run), or None when it is
        not hosted here."""
        return Reply(self.handle.state.remote(automation_id))


class TimerRef:
    """The timer actor (``TimerHost``): wakes automations at their deadlines."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle

    def schedule(self, deadlines: dict[str, int | None], offset_us: int) -> Reply[None]:
        """Set or clear deadlines (events-clock µs), with the events clock's offset."""
        return Reply(self.handle.schedule.remote(deadlines, offset_us))

    def set_offset(self, offset_us: int) -> None:
        """Tell the timer the events clock's offset (no answer awaited)."""
        self.handle.set_offset.remote(offset_us)

    def due(self) -> AsyncIterator[list[tuple[str, int, int]]]:
        """Lists of ``(automation id, as_of µs, lateness µs)`` as deadlines come due
        (the stream is opened at once). Ends with an error when the timer dies (Ray
        restarts it empty)."""
        stream = self.handle.stream.options(num_returns="streaming", max_task_retries=0).remote()
        return _items(stream, _same)


class ExecutorRef:
    """An action executor (``ExecutorHost``): claims and runs the actions of firings."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle

    def ping(self) -> Reply[bool]:
        """Liveness check."""
        return Reply(self.handle.ping.remote())

    def execute(self, blob: bytes) -> Reply[bytes]:
        """Claim and start the actions of a packed batch of firings; their
        ``action.triggered`` events, packed."""
        return Reply(self.handle.execute.remote(blob))

    def adopt(self) -> Reply[int]:
        """Carry out what earlier incarnations claimed and did not finish; how many."""
        return Reply(self.handle.adopt.remote())

    def results(self) -> AsyncIterator[ExecutorResults]:
        """Finished actions, as they finish (the stream is opened at once); ends with
        an error when the executor dies."""
        stream = self.handle.results.options(num_returns="streaming", max_task_retries=0).remote()
        return _items(stream, ExecutorResults.unpack)


class RayRuntime:
    """Owns the connection to Ray and creates Marmot's actors."""

    def __init__(self, config: RayConfig) -> None:
        self.config = config
        self._started_here = False
        # (when read, cluster resources, live nodes), for ``capacity``
        self._cluster: tuple[float, dict[str, float], int] | None = None

    @property
    def namespace(self) -> str:
        """The Ray namespace every Marmot actor lives in."""
        return self.config.namespace

    def start(self) -> None:
        """Start an embedded Ray, or join the configured cluster; no-op if connected."""
        if ray.is_initialized():
            return
        c = self.config
        options: dict[str, Any] = {
            "namespace": c.namespace,
            "log_to_driver": c.log_to_driver,
            "logging_level": logging.WARNING,
        }
        if c.address is None:
            # "local" never joins a cluster found in the environment (DESIGN.md).
            options.update(
                address="local",
                include_dashboard=False,
                object_store_memory=c.object_store_memory_mb * 1024 * 1024,
            )
            if c.num_cpus is not None:
                options["num_cpus"] = c.num_cpus
        else:
            options["address"] = c.address
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        if c.address is None:
            # Ray runs its workers' task threads at nice 15, below the daemon:
            # on a busy machine the automation actors and the timer then wait
            # for the CPU behind everything else (measured on 2 cores at 2,000
            # events/s: an actor call ~12 ms instead of ~3 ms). An embedded Ray
            # is Marmot's alone, so its workers run at the daemon's priority;
            # executors lower their own (executors.nice). Set in the environment
            # the raylet and its workers inherit; an explicit value wins.
            os.environ.setdefault(WORKER_NICENESS_ENV, "0")
            # Ray's event-loop statistics (RAY_event_stats) stay on: turned off,
            # idle actors used a little less CPU on a busy host (0.57-0.68 % of a
            # core each against 0.77-0.93 %), but a firing's webhook arrived
            # 25-35 ms later at 1 event/s (p50 50-64 ms against 28-38 ms, quiet
            # host, bench/actions.py --rate 1) and the daemon spent more CPU.
            # Ray's gRPC servers listen on every interface, and Ray replaces a
            # loopback node address with the machine's own (services.
            # resolve_ip_for_localhost): they cannot be kept to loopback. Token
            # authentication (Ray's default for a new local cluster, kept on)
            # refuses anyone without the token in ~/.ray/auth_token. Ray says
            # so at every start: not the user's news.
            _quiet_token_notice()
        try:
            ray.init(**options)
        except (ConnectionError, RuntimeError) as exc:
            if c.address is None:
                raise
            raise RayUnavailable(_join_failure(c.address, exc)) from exc
        if c.address is None:
            _private_token()
        self._started_here = True
        log.info("ray started", extra={"address": c.address or "local"})

    def shutdown(self) -> None:
        """Disconnect from Ray (stopping it if it was started here)."""
        if self._started_here and ray.is_initialized():
            ray.shutdown()
        self._started_here = False

    def automation_actor(self, name: str, *args: Any) -> AutomationRef:
        """A new automation actor (no CPU reserved; Ray restarts it if it dies).

        Calls in flight or sent while it restarts are retried on the new one
        (which answers that it lost its automations; the daemon recovers them).
        """
        handle = _AutomationActor.options(
            name=name,
            namespace=self.namespace,
            num_cpus=0,
            max_restarts=-1,
            max_task_retries=-1,
            max_concurrency=1,
            get_if_exists=False,
        ).remote(*args)
        return AutomationRef(handle)

    def timer_actor(self, name: str = "timer") -> TimerRef:
        """The timer actor (async, so its sleep never blocks its stream)."""
        handle = _TimerActor.options(
            name=name,
            namespace=self.namespace,
            num_cpus=0,
            max_restarts=-1,
            max_task_retries=-1,
            max_concurrency=1000,
        ).remote()
        return TimerRef(handle)

    def executor_actor(self, name: str, *args: Any) -> ExecutorRef:
        """An action executor (several actions run at once in one actor)."""
        handle = _ExecutorActor.options(
            name=name,
            namespace=self.namespace,
            num_cpus=0,
            max_restarts=-1,
            max_task_retries=-1,
            max_concurrency=1000,
        ).remote(*args)
        return ExecutorRef(handle)

    def offload(self, function: Callable[..., T], *args: Any) -> Reply[T]:
        """Run ``function(*args)`` as a Ray task, in another process: off the
        daemon's event loop and its interpreter lock. ``function`` must be a
        module-level function (Ray pickles it by reference)."""
        return Reply(_task_result(_Offloaded.remote(function, *args)))

    def offload_stream(self, function: Callable[..., Iterator[T]], *args: Any) -> AsyncIterator[T]:
        """Run the generator ``function(*args)`` as a Ray task (see ``offload``); its
        items arrive as it yields them (the task starts at once)."""
        stream = _Streamed.options(num_returns="streaming").remote(function, *args)
        return _task_items(stream)

    def kill(self, ref: AutomationRef | TimerRef | ExecutorRef) -> None:
        """Stop an actor for good (no restart)."""
        ray.kill(ref.handle, no_restart=True)

    def capacity(self, actors_in_use: int) -> dict[str, Any]:
        """What this Ray node (or cluster) can still take, in automation actors."""
        now = time.monotonic()
        if self._cluster is None or now - self._cluster[0] > CLUSTER_CACHE_S:
            resources = ray.cluster_resources()  # type: ignore[no-untyped-call]
            alive = len([n for n in ray.nodes() if n.get("Alive")])  # type: ignore[no-untyped-call]
            self._cluster = (now, resources, alive)
        _, resources, alive = self._cluster
        cpus = float(resources.get("CPU", os.cpu_count() or 1))
        memory = float(resources.get("memory", 0.0))
        by_cpu = int(cpus * ACTORS_PER_CORE)
        by_memory = int(memory // ACTOR_MEMORY_BYTES) if memory else by_cpu
        limit = min(by_cpu, by_memory)
        return {
            "nodes": alive,
            "cpus": cpus,
            "memory_bytes": memory,
            "actor_memory_unique_bytes": ACTOR_MEMORY_BYTES,
            "actor_memory_resident_bytes": ACTOR_RESIDENT_BYTES,
            "actor_limit": limit,
            "actors_in_use": actors_in_use,
            "actors_free": max(limit - actors_in_use, 0),
        }
