"""The daemon: the service with its sockets (ZeroMQ ingest and RPC, HTTP).

``Daemon`` is what ``marmot serve`` runs. Embed it with ``async with
Daemon(config) as daemon: ...``, or from synchronous code (tests, benchmarks,
notebooks) with ``DaemonThread(config).start()``. RPC and HTTP are bound
before Ray starts and automations recover, so a starting daemon answers
``health``, ``status`` and ``/healthz`` with its progress.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import socket
import threading
from collections.abc import Callable, Coroutine, Iterator, Sequence
from types import TracebackType
from typing import Any

import uvicorn

from marmot.actors.clock import SYSTEM_CLOCK
from marmot.actors.gc_thresholds import tune_gc
from marmot.actors.metrics import Metrics
from marmot.actors.runtime import RayRuntime
from marmot.actors.service import Service
from marmot.actors.startup import StartupPhase, StartupProgress
from marmot.actors.store import Store
from marmot.config import MarmotConfig
from marmot.engine.clock import Clock
from marmot.engine.errors import DaemonUnavailable
from marmot.engine.models.events import Event
from marmot.transport.actions import build_runners
from marmot.transport.api import VERSION, Api
from marmot.transport.curve import CurveServer
from marmot.transport.http import build_app
from marmot.transport.ingest import Ingest
from marmot.transport.protocol import METHODS
from marmot.transport.rpc import RpcServer
from marmot.transport.starting import StartingApi, starting_health
from marmot.transport.webhooks import WebhookReceiver, WebhookSettings, hooks_url

log = logging.getLogger(__name__)


class _QuietServer(uvicorn.Server):
    """uvicorn without its own signal handlers: the daemon owns SIGINT/SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _bind_tcp(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port``; raises ``OSError`` naming the address."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot serve HTTP on {host}:{port}: {exc.strerror}") from exc
    return sock


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
        self.store: Store | None = None
        self.service: Service | None = None
        self.ingest: Ingest | None = None
        self.rpc: RpcServer | None = None
        self.curve: CurveServer | None = None
        self._http: uvicorn.Server | None = None
        self._http_socket: socket.socket | None = None
        self._http_task: asyncio.Task[None] | None = None
        self._loops: list[asyncio.Task[Any]] = []  # the RPC and ingest loops
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
        c.data.dir.mkdir(parents=True, exist_ok=True)
        self.store = Store.open(c.data.dir / "marmot.db")
        self.store.db.start_checkpointer()
        token = c.rpc.token.get_secret_value() if c.rpc.token else None
        if c.curve.secret_key_file is not None:
            self.curve = CurveServer(c.curve.secret_key_file, c.curve.clients_dir)
        starting = StartingApi(self.progress, METHODS, self._clock)
        self.rpc = RpcServer(
            c.rpc.url, starting.handlers(), token=token, curve=self.curve, metrics=self.metrics
        )
        await self.rpc.start()
        loop = asyncio.get_running_loop()
        self._loops.append(loop.create_task(self.rpc.serve()))
        if c.http.enabled:
            # Bound here, not by uvicorn: on a busy port uvicorn calls sys.exit,
            # which would end the event loop instead of failing the start.
            self._http_socket = _bind_tcp(c.http.host, c.http.port)
            app = build_app(self.metrics.registry, self._health, self._webhook_receiver())
            self._http = _QuietServer(uvicorn.Config(app, log_level="warning", lifespan="off"))
            self._http_task = loop.create_task(self._http.serve(sockets=[self._http_socket]))
        self._is_listening = True
        log.info("marmot is starting", extra={"rpc": self.rpc_endpoint})

    async def _start(self) -> None:
        c = self.config
        assert self.store is not None and self.rpc is not None
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
        self.ingest.start()
        self._loops.append(asyncio.get_running_loop().create_task(self.ingest.run()))
        # One step of the loop: no request sees the full API before the state
        # says serving, nor the other way round.
        api = Api(self.service, self.limits, self._clock, hooks_url=self.hooks_url)
        self.rpc.swap_handlers(api.handlers())
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

    async def _emit(self, events: Any) -> None:
        assert self.service is not None
        await self.service.emit(events, source="ingest")

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
        )
        progress = self.progress
        return WebhookReceiver(
            self.store.webhooks,
            settings,
            self.metrics,
            emit=self._emit_webhook_events,
            is_ready=lambda: progress.is_serving and self.service is not None,
            clock=self._clock,
        )

    async def _emit_webhook_events(self, events: Sequence[Event]) -> None:
        service = self.service
        if service is None:
            raise DaemonUnavailable("the daemon is not serving")
        await service.emit(events, source="webhook")

    def _health(self) -> dict[str, Any]:
        """``/healthz``: ok (200) once serving; while starting, not ok (503) with the progress."""
        service = self.service
        if not self.progress.is_serving or service is None:
            return starting_health(self.progress, self._clock.monotonic())
        return {
            "ok": True,
            "state": StartupPhase.SERVING.value,
            "version": VERSION,
            "automations": service.status()["automations_loaded"],
        }

    async def stop(self) -> None:
        """Close the sockets, stop the actors, close the store (whatever was started)."""
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
            await self.service.stop()
            self.service.runtime.shutdown()
        if self.store is not None:
            self.store.close()

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
