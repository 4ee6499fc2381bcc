"""The daemon: the service with its sockets (ZeroMQ ingest and RPC, HTTP).

``Daemon`` is what ``marmot serve`` runs. Embed it with ``async with
Daemon(config) as daemon: ...``, or from synchronous code (tests, benchmarks,
notebooks) with ``DaemonThread(config).start()``. RPC and HTTP are bound
before Ray starts and automations recover, so a starting daemon answers
``health``, ``status`` and ``/healthz`` with its progress.

A daemon holds its data folder (``DataDir``: a second one is refused) and
watches it (``StorageWatch``): while the disk is full, writes are refused
with ``StorageFull``, health says why, ingest holds what it took and stops
reading, and the daemon's own events wait to be written; it recovers by
itself once space is back. A data folder deleted under it stops it serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import socket
import threading
from collections.abc import Callable, Coroutine, Sequence
from types import TracebackType
from typing import Any

import zmq
from starlette.routing import BaseRoute

from marmot.actors.clock import SYSTEM_CLOCK
from marmot.actors.datadir import DataDir
from marmot.actors.gc_thresholds import tune_gc
from marmot.actors.metrics import Metrics
from marmot.actors.runtime import RayRuntime
from marmot.actors.service import Service
from marmot.actors.startup import StartupPhase, StartupProgress
from marmot.actors.storage_watch import HeldWrites, StorageWatch
from marmot.actors.store import Store
from marmot.config import MarmotConfig
from marmot.engine.clock import Clock
from marmot.engine.errors import DaemonUnavailable, StorageLost
from marmot.engine.models.events import Event
from marmot.transport.actions import build_runners
from marmot.transport.api import Api
from marmot.transport.console import Console, OrchestratorNames, console_routes
from marmot.transport.curve import CurveServer
from marmot.transport.health import health_report, lost_handlers
from marmot.transport.http import build_app, server_config
from marmot.transport.ingest import Ingest
from marmot.transport.listeners import (
    QuietServer,
    address_in_use,
    bind_tcp,
    check_free,
    is_in_use,
)
from marmot.transport.prefect_bridge import PrefectBridge
from marmot.transport.prefect_link import open_bridge, with_bridge_status
from marmot.transport.protocol import METHODS
from marmot.transport.rpc import RpcServer
from marmot.transport.starting import StartingApi
from marmot.transport.webhooks import WebhookReceiver, WebhookSettings, hooks_url

log = logging.getLogger(__name__)


class Daemon:
    """Wires config, store, Ray service, ingest, RPC and HTTP together.

    ``recovery_gate``, when given, holds start-up before any automation is
    recovered until it is set, while RPC and HTTP already answer: for
    embedders and tests that act on a daemon while it starts. ``clock`` is the
    clock every part reads.
    """

    def __init__(
        self,
        config: MarmotConfig,
        *,
        recovery_gate: asyncio.Event | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.config = config
        self.metrics = Metrics()
        self.progress = StartupProgress(started_at=clock.monotonic())
        self._clock = clock
        self._recovery_gate = recovery_gate
        self.limits = config.limits.event_limits()
        # Where webhook URLs start (up to the slug); None without the HTTP server.
        self.hooks_url = hooks_url(config.http) if config.http.enabled else None
        self.datadir: DataDir | None = None
        self.store: Store | None = None
        self.storage: StorageWatch | None = None
        # Set once the data folder is lost: the daemon stops serving for good.
        self.lost: StorageLost | None = None
        self.service: Service | None = None
        self._is_service_stopped = False
        self.ingest: Ingest | None = None
        self.bridge: PrefectBridge | None = None
        self.rpc: RpcServer | None = None
        self.curve: CurveServer | None = None
        self._http: QuietServer | None = None
        self._http_socket: socket.socket | None = None
        self._http_task: asyncio.Task[None] | None = None
        self.console: Console | None = None  # the web console, when served
        self._loops: list[asyncio.Task[Any]] = []  # the RPC and ingest loops
        self._ingest_task: asyncio.Task[None] | None = None
        self._held_ingest = HeldWrites(max_delay_s=1.0)
        self._is_listening = False
        progress = self.progress
        self.metrics.serving.set_function(lambda: float(progress.is_serving))
        self.metrics.startup_automations_remaining.set_function(
            lambda: progress.automations_remaining
        )

    @property
    def rpc_endpoint(self) -> str:
        """The RPC socket's actual endpoint (after binding, with the real port)."""
        return self.rpc.bound_endpoint if self.rpc else self.config.rpc.url

    @property
    def ingest_endpoint(self) -> str:
        """The PULL socket's actual endpoint."""
        return self.ingest.bound_endpoint if self.ingest else self.config.ingest.pull_url

    async def listen(self) -> None:
        """Open the store and bind RPC and HTTP, so the daemon answers while it starts.

        Until ``start()`` is done, ``health`` and ``status`` reply with the
        start-up progress, ``/healthz`` with 503 and every other method with
        ``DaemonUnavailable``; ``/metrics`` works. ``start()`` calls this if it
        was not called. If a step fails, what was opened is closed again.
        """
        if self._is_listening:
            return
        try:
            await self._listen()
        except BaseException:
            await self.stop()
            raise

    async def start(self) -> None:
        """Listen (see ``listen()``), start Ray and the service, bind ingest, then serve.

        If any step fails, what was started is stopped and the sockets are
        closed again before the error propagates (no actors are left behind
        in Ray).
        """
        try:
            if not self._is_listening:
                await self._listen()
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _listen(self) -> None:
        c = self.config
        self.progress.started_at = self._clock.monotonic()
        self.progress.enter(StartupPhase.OPENING_STORE)
        # First of all: one daemon per data folder (a second is refused, naming the first).
        self.datadir = DataDir.claim(c.data.dir)
        leftovers = await asyncio.to_thread(self.datadir.clean_leftovers)
        if leftovers is not None:
            log.warning("%s", leftovers.describe(), extra={"folder": str(c.data.dir)})
        # Found now, not once Ray has started and the automations are recovered.
        check_free("ingest.pull_url", c.ingest.pull_url)
        self.store = Store.open(c.data.dir / "marmot.db")
        self.store.db.start_checkpointer()
        self.storage = StorageWatch(
            self.store.db, self._storage_lost, registry=self.metrics.registry
        )
        self.storage.start()
        token = c.rpc.token.get_secret_value() if c.rpc.token else None
        if c.curve.secret_key_file is not None:
            self.curve = CurveServer(
                c.curve.secret_key_file, c.curve.clients_dir, metrics=self.metrics
            )
        starting = StartingApi(self.progress, METHODS, self._clock)
        self.rpc = RpcServer(
            c.rpc.url,
            starting.handlers(),
            token=token,
            curve=self.curve,
            metrics=self.metrics,
            max_reply_bytes=c.rpc.max_reply_bytes,
            max_unread_bytes=c.rpc.max_unread_bytes,
        )
        try:
            await self.rpc.start()
        except zmq.ZMQError as exc:
            if is_in_use(exc):
                raise address_in_use("rpc.url", c.rpc.url) from None
            raise
        loop = asyncio.get_running_loop()
        self._loops.append(loop.create_task(self.rpc.serve()))
        if c.http.enabled:
            # Bound here, not by uvicorn: on a busy port uvicorn calls sys.exit,
            # which would end the event loop instead of failing the start.
            self._http_socket = bind_tcp(c.http.host, c.http.port, "http.port")
            app = build_app(
                self.metrics.registry,
                self._health,
                self._webhook_receiver(),
                self._console_routes(),
            )
            self._http = QuietServer(server_config(app, c.http, self.metrics))
            self._http_task = loop.create_task(self._http.serve(sockets=[self._http_socket]))
        self._is_listening = True
        log.info("marmot is starting", extra={"rpc": self.rpc_endpoint})

    async def _start(self) -> None:
        c = self.config
        assert self.store is not None and self.rpc is not None and self.datadir is not None
        self.progress.enter(StartupPhase.STARTING_RAY)
        self.service = Service(
            RayRuntime(c.ray),
            self.store,
            c,
            runner_factory=build_runners,
            metrics=self.metrics,
            clock=self._clock,
            progress=self.progress,
            recovery_gate=self._recovery_gate,
        )
        if c.ray.address is None:
            # The embedded Ray's processes outlive a daemon killed with SIGKILL:
            # marked and recorded, the next daemon on this data folder ends them.
            with self.datadir.marking_ray() as marker:
                await self.service.start()
            await asyncio.to_thread(self.datadir.record_ray, marker)
        else:
            await self.service.start()
        self.progress.enter(StartupPhase.STARTING_INGEST)
        # Bound only now: until the automations are recovered, publishers'
        # PUSH sockets hold their events on their side.
        self.ingest = Ingest(
            c.ingest,
            self.limits,
            lambda events: self._emit(events),
            self.metrics,
            clock=self._clock,
            curve=self.curve,
        )
        try:
            self.ingest.start()
        except zmq.ZMQError as exc:
            if is_in_use(exc):
                raise address_in_use("ingest.pull_url", c.ingest.pull_url) from None
            raise
        self._ingest_task = asyncio.get_running_loop().create_task(self.ingest.run())
        self._loops.append(self._ingest_task)
        if self.lost is not None:
            raise self.lost  # lost while starting: nothing may be acknowledged
        # One step of the loop: no request sees the full API before the state
        # says serving, nor the other way round.
        api = Api(self.service, self.limits, self._clock, hooks_url=self.hooks_url)
        handlers = api.handlers()
        handlers["health"] = self._health_rpc  # the store's faults included
        if c.prefect.api_url is not None:
            # The event bridge from a Prefect server (transport/prefect_bridge.py).
            self.bridge = open_bridge(
                c, self.service, self.store, registry=self.metrics.registry, clock=self._clock
            )
            self._loops.append(asyncio.get_running_loop().create_task(self.bridge.run()))
            handlers["status"] = with_bridge_status(handlers["status"], self.bridge)
        self.rpc.swap_handlers(handlers)
        self.progress.enter(StartupPhase.SERVING)
        # Everything built so far (Ray, pydantic schemas, automations) lives as
        # long as the daemon: keep it out of the cyclic collector's full passes,
        # which otherwise stall the event loop for tens of milliseconds.
        gc.freeze()
        tune_gc()
        log.info(
            "marmot is serving",
            extra={
                "rpc": self.rpc_endpoint,
                "ingest": self.ingest_endpoint,
                "startup_s": round(self.progress.elapsed_s(self._clock.monotonic()), 3),
            },
        )

    async def _emit(self, events: Sequence[Event]) -> None:
        """Ingest's submit. A batch the store refuses for a while (a full disk) is held
        and sent again until it is logged, and later batches wait behind it: ingest
        has only a few submits in flight, so it stops reading its sockets, and
        publishers' sockets hold what follows."""
        service = self.service
        assert service is not None
        await self._held_ingest(lambda: service.emit(events, source="ingest"))

    def _console_routes(self) -> list[BaseRoute]:
        """The web console's routes (none when ``http.console`` is off, or when bound
        beyond loopback with no token to log in with). It calls the RPC handlers
        in-process, so it sees the start-up and lost states as RPC clients do."""
        c = self.config
        if not c.http.console or self.rpc is None:
            return []
        secret = c.http.console_token or c.rpc.token
        token = secret.get_secret_value() if secret is not None else None
        orchestrator = None
        if c.orchestrator.api_url is not None:
            key = c.orchestrator.api_key
            orchestrator = OrchestratorNames(
                str(c.orchestrator.api_url), key.get_secret_value() if key else None
            )
        built = console_routes(
            self.rpc.call,
            host=c.http.host,
            token=token,
            hooks_url=self.hooks_url,
            orchestrator=orchestrator,
        )
        if built is None:
            return []
        self.console, routes = built
        return routes

    def _webhook_receiver(self) -> WebhookReceiver:
        """``/hooks/<slug>``: events go through the service like any other (logged,
        routed, counted) once the daemon serves."""
        assert self.store is not None
        c = self.config
        settings = WebhookSettings(
            limits=self.limits,
            max_body_bytes=c.http.max_body_bytes,
            template_max_bytes=c.limits.template_max_bytes,
            template_timeout_s=c.limits.template_timeout_s,
            body_timeout_s=c.http.body_timeout_s,
        )
        progress = self.progress
        return WebhookReceiver(
            self.store.webhooks,
            settings,
            self.metrics,
            emit=self._emit_webhook_events,
            is_ready=lambda: progress.is_serving and self.service is not None and self.lost is None,
            clock=self._clock,
        )

    async def _emit_webhook_events(self, events: Sequence[Event]) -> None:
        service = self.service
        if service is None:
            raise DaemonUnavailable("the daemon is not serving")
        await service.emit(events, source="webhook")

    def _health(self) -> dict[str, Any]:
        """``/healthz`` and ``health``: see ``health_report``."""
        service = self.service
        serving = service is not None and self.progress.is_serving
        report = health_report(
            self.progress,
            self._clock.monotonic(),
            fault=self.lost or (self.storage.fault if self.storage is not None else None),
            is_stopped=self.lost is not None,
            automations=len(service.placement.automations) if serving and service else None,
        )
        if self.bridge is not None:
            report["prefect_bridge"] = self.bridge.status()
        return report

    async def _health_rpc(self, params: dict[str, Any]) -> dict[str, Any]:
        """The ``health`` RPC method: what ``/healthz`` says."""
        METHODS["health"].params.model_validate(params)
        return self._health()

    async def _storage_lost(self, lost: StorageLost) -> None:
        """The data folder was deleted or replaced: stop serving, for good. Every RPC
        method but ``health`` and ``status`` fails with the reason, ingest stops
        reading (publishers' sockets hold their events) and the actors stop."""
        if self.lost is not None:
            return
        self.lost = lost
        log.error("stopped serving: %s", lost.message, extra={"folder": str(self.config.data.dir)})
        if not self.progress.is_serving:
            return  # the start fails when it gets there
        if self.rpc is not None:
            self.rpc.swap_handlers(lost_handlers(lost, METHODS, self._health_rpc))
        if self._ingest_task is not None:
            self._ingest_task.cancel()
            await asyncio.gather(self._ingest_task, return_exceptions=True)
        if self.ingest is not None:
            self.ingest.close()
        if self.service is not None and not self._is_service_stopped:
            self._is_service_stopped = True
            try:
                await self.service.stop()
            except Exception:
                log.exception("stopping the service after the data folder was lost failed")

    async def stop(self) -> None:
        """Close the sockets, stop the actors, close the store (whatever was started)."""
        if self.console is not None:
            self.console.stop()  # its live streams end, so uvicorn can finish
        if self._http is not None:
            self._http.should_exit = True  # uvicorn finishes its own task
        for task in self._loops:
            task.cancel()
        http = [self._http_task] if self._http_task is not None else []
        await asyncio.gather(*self._loops, *http, return_exceptions=True)
        if self._http_socket is not None:
            self._http_socket.close()  # uvicorn closes it too, unless it never started
        if self.ingest is not None:
            await self.ingest.flush()
            self.ingest.close()
        if self.rpc is not None:
            await self.rpc.close()
        if self.curve is not None:
            self.curve.stop()
        if self.service is not None:
            if not self._is_service_stopped:
                self._is_service_stopped = True
                await self.service.stop()
            self.service.runtime.shutdown()
        if self.storage is not None:
            await self.storage.stop()
        if self.store is not None:
            self.store.close()
        if self.datadir is not None:
            self.datadir.release()

    async def __aenter__(self) -> Daemon:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def run_until_signalled(self) -> None:
        """Serve until SIGINT or SIGTERM, then stop cleanly."""
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        async with self:
            # After the start: ray.init() installs a SIGTERM handler of its own
            # (it exits with code 15), which these replace.
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError):
                    loop.add_signal_handler(sig, stopping.set)
            await stopping.wait()
            log.info("stopping")


class DaemonThread:
    """A ``Daemon`` serving on its own event loop in a background thread.

    ``recovery_gate`` is passed to the ``Daemon``; set it with
    ``loop.call_soon_threadsafe(gate.set)``.
    """

    def __init__(self, config: MarmotConfig, *, recovery_gate: asyncio.Event | None = None) -> None:
        self.config = config
        self.daemon = Daemon(config, recovery_gate=recovery_gate)
        self.loop = asyncio.new_event_loop()
        self._listening = threading.Event()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="marmot-daemon", daemon=True)

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self._task = self.loop.create_task(self._serve())
            self.loop.run_until_complete(self._task)
        except BaseException as exc:  # handed to the caller of start()
            self._error = exc
            self._listening.set()
            self._ready.set()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        await self.daemon.listen()
        self._listening.set()
        async with self.daemon:
            self._ready.set()
            await self._stop.wait()

    def start(self, timeout_s: float = 300.0, *, wait_serving: bool = True) -> DaemonThread:
        """Start the daemon; returns once it serves (raises if start-up failed).

        With ``wait_serving=False`` it returns as soon as RPC and HTTP answer,
        while the daemon may still be starting.
        """
        self._thread.start()
        started = self._ready if wait_serving else self._listening
        if not started.wait(timeout_s):
            raise TimeoutError(f"the daemon did not start within {timeout_s} s")
        if self._error is not None:
            raise self._error
        return self

    def call(self, fn: Callable[[], Coroutine[Any, Any, Any]], timeout_s: float = 60.0) -> Any:
        """Run a coroutine function on the daemon's loop; return its result."""
        return asyncio.run_coroutine_threadsafe(fn(), self.loop).result(timeout_s)

    def stop(self, timeout_s: float = 120.0) -> None:
        """Stop the daemon (cancelling its start-up if it is still starting) and wait
        for its thread."""
        if self._ready.is_set():
            if self._stop is not None:
                self.loop.call_soon_threadsafe(self._stop.set)
        elif self._task is not None:
            # Start-up cleans up after itself when cancelled (Daemon.start).
            self.loop.call_soon_threadsafe(self._task.cancel)
        self._thread.join(timeout_s)

    @property
    def rpc_url(self) -> str:
        """Where clients reach the RPC socket."""
        return self.daemon.rpc_endpoint

    @property
    def ingest_url(self) -> str:
        """Where publishers reach the ingest socket."""
        return self.daemon.ingest_endpoint
