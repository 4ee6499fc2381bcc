"""Daemon benchmarks: throughput, latency, proactive lateness, memory (not a test).

    .venv/bin/python bench/daemon.py [--events N] [--quick]

Runs a real daemon (embedded Ray, SQLite in a temporary folder) in this
process, and publishers over ZeroMQ PUSH in separate processes. Prints:
  * sustained events/s from PUSH to evaluation, with 1, 10 and 100
    automations, one actor per automation and with automations_per_actor=50;
  * publish-to-firing p50/p99 latency at a fixed rate (every event fires);
  * proactive lateness p50/p99 (firing time minus the window's deadline);
  * daemon RSS and unique memory per automation actor;
  * CPU an idle automation actor uses (% of a core, by thread name).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import yaml

from marmot.actors.runtime import RayRuntime
from marmot.config import RayConfig, load_config
from marmot.engine.models.events import Event
from marmot.engine.triggers.firing import Firing
from marmot.transport.client import Client
from marmot.transport.daemon import DaemonThread
from marmot.transport.event_ids import new_event_id

# Set by --random-ids (read again in the publisher processes).
RANDOM_IDS_ENV = "MARMOT_BENCH_RANDOM_IDS"


def _new_id() -> UUID:
    """A publisher's event id: time-ordered (version 7) as Prefect makes them, or
    random (version 4) with --random-ids, the event log's costliest case."""
    return uuid4() if os.environ.get(RANDOM_IDS_ENV) else new_event_id()


def _event(name: str, k: int) -> dict[str, Any]:
    return {
        "id": str(_new_id()),
        "occurred": datetime.now(UTC).isoformat(),
        "event": name,
        "resource": {"prefect.resource.id": f"prefect.flow-run.{k % 97}"},
    }


def _blast(url: str, names: list[str], count: int, batch: int) -> None:
    """Encode every frame first, then send them flat out: measures the daemon,
    not the publisher."""
    import zmq

    from marmot.engine.models.events import Event
    from marmot.transport.codec import events_frame

    events = [Event.model_validate(_event(names[k % len(names)], k)) for k in range(count)]
    frames = [events_frame(events[i : i + batch]) for i in range(0, count, batch)]
    socket = zmq.Context.instance().socket(zmq.PUSH)
    socket.setsockopt(zmq.LINGER, 30_000)
    socket.connect(url)
    for frame in frames:
        socket.send(frame)
    socket.close()


def _publish(url: str, names: list[str], count: int, rate: float, batch: int) -> None:
    """Publisher process: ``count`` events over PUSH, at ``rate``/s (0 = flat out).

    Paced events are validated before the clock starts and stamped with
    ``occurred`` as they go, one frame each: this process shares the two
    cores with the daemon, so it spends as little of them as a publisher can.
    """
    if not rate:
        _blast(url, names, count, batch)
        return
    from marmot.transport.client import Publisher

    ready = [Event.model_validate(_event(names[k % len(names)], k)) for k in range(count)]
    started = time.perf_counter()
    with Publisher(url, batch_size=batch) as publisher:
        for k, event in enumerate(ready):
            pause = started + k / rate - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            publisher.publish(event.model_copy(update={"occurred": datetime.now(UTC)}))
            publisher.flush()


def publisher(url: str, names: list[str], count: int, rate: float = 0, batch: int = 200) -> Any:
    ctx = multiprocessing.get_context("spawn")
    process = ctx.Process(target=_publish, args=(url, names, count, rate, batch), daemon=True)
    process.start()
    return process


def reactive(name: str, expect: str, threshold: int) -> dict[str, Any]:
    return {
        "name": name,
        "trigger": {
            "type": "event",
            "expect": [expect],
            "for_each": ["prefect.resource.id"],
            "threshold": threshold,
            "within": 60,
        },
        "actions": [{"type": "do-nothing"}],
    }


# Config settings given with --set KEY=VALUE (YAML values), for every daemon started.
SETTINGS: dict[str, Any] = {}


def start_daemon(folder: Path, **overrides: Any) -> DaemonThread:
    config = load_config(
        None,
        env={},
        overrides={
            "data.dir": str(folder),
            "rpc.url": "tcp://127.0.0.1:*",
            "ingest.pull_url": "tcp://127.0.0.1:*",
            "http.enabled": False,
            **SETTINGS,
            **overrides,
        },
    )
    return DaemonThread(config).start()


def wait_until(predicate: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark step timed out")
        time.sleep(0.01)


def evaluated(daemon: DaemonThread) -> int:
    assert daemon.daemon.service is not None
    return int(daemon.daemon.service.metrics.evaluations._value.get())


class CpuMeter:
    """CPU time spent between ``start`` and ``stop``: by this process (the daemon)
    and by the whole machine. Per event, these vary less from one machine to
    another than rates do, so runs on different hosts can be compared."""

    def __init__(self) -> None:
        self.daemon_s = 0.0
        self.machine_s = 0.0
        self._start: tuple[float, float] = (0.0, 0.0)

    @staticmethod
    def _read() -> tuple[float, float]:
        own = os.times()
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        # user nice system idle iowait irq softirq steal ...: busy = all but idle, iowait
        ticks = [int(f) for f in fields]
        busy = sum(ticks) - ticks[3] - (ticks[4] if len(ticks) > 4 else 0)
        return own.user + own.system, busy / os.sysconf("SC_CLK_TCK")

    def start(self) -> None:
        self._start = self._read()

    def stop(self) -> None:
        own, machine = self._read()
        self.daemon_s = own - self._start[0]
        self.machine_s = machine - self._start[1]


def throughput(
    automations: int, per_actor: int, events: int, cpu: CpuMeter | None = None
) -> tuple[float, int, int]:
    """Events/s from PUSH until every event was evaluated; plus logged and evaluated counts."""
    with tempfile.TemporaryDirectory() as folder:
        daemon = start_daemon(Path(folder), automations_per_actor=per_actor)
        try:
            names = [f"bench.e{i}" for i in range(automations)]
            with Client(daemon.rpc_url, timeout_s=600) as client:
                for i, name in enumerate(names):
                    client.create_automation(reactive(f"a{i}", name, threshold=10))
            service = daemon.daemon.service
            assert service is not None
            calls_before = service.router.calls
            process = publisher(daemon.ingest_url, names, events)
            # Time from the first event in to the last evaluated, so the
            # publisher process's start-up does not count.
            wait_until(lambda: service.router.stats.received > 0, timeout_s=120)
            began = time.perf_counter()
            if cpu is not None:
                cpu.start()
            wait_until(lambda: evaluated(daemon) >= events, timeout_s=600)
            elapsed = time.perf_counter() - began
            if cpu is not None:
                cpu.stop()
            process.join(30)
            calls, carried = (
                now - then for now, then in zip(service.router.calls, calls_before, strict=True)
            )
            print(
                f"  {calls:,} calls to automation actors, {carried / max(calls, 1):.1f} "
                "events per call",
                flush=True,
            )
            assert daemon.daemon.store is not None
            logged = daemon.daemon.store.events.count()
            return events / elapsed, logged, evaluated(daemon)
        finally:
            daemon.stop()


def sample_dispatch(daemon: DaemonThread, sample: Callable[[float, Event], None]) -> None:
    """Call ``sample(now, triggering event)`` for every firing the daemon dispatches."""
    service = daemon.daemon.service
    assert service is not None
    original = service.dispatcher.dispatch

    async def timed(firings: Sequence[Firing]) -> None:
        now = time.time()
        for firing in firings:
            if firing.triggering_event is not None:
                sample(now, firing.triggering_event)
        await original(firings)

    service.dispatcher.dispatch = timed  # type: ignore[method-assign]


def latency(rate: float, seconds: float, firing_share: int = 1) -> tuple[float, float, int]:
    """Publish-to-firing p50/p99 in ms at ``rate`` events/s; one event in
    ``firing_share`` fires (the others concern no automation)."""
    samples: list[float] = []
    with tempfile.TemporaryDirectory() as folder:
        daemon = start_daemon(Path(folder))
        try:
            sample_dispatch(
                daemon, lambda now, event: samples.append(now - event.occurred.timestamp())
            )
            with Client(daemon.rpc_url) as client:
                automation = reactive("every event", "bench.tick", threshold=1)
                automation["trigger"]["within"] = 0  # immediate: every event fires
                client.create_automation(automation)
            count = int(rate * seconds)
            names = ["bench.tick"] + [f"bench.noise{k}" for k in range(firing_share - 1)]
            process = publisher(daemon.ingest_url, names, count, rate=rate)
            process.join(seconds * 3 + 30)
            wait_until(lambda: len(samples) >= count // firing_share, timeout_s=60)
        finally:
            daemon.stop()
    ordered = sorted(samples)
    return (
        statistics.median(ordered) * 1000,
        ordered[int(0.99 * (len(ordered) - 1))] * 1000,
        len(ordered),
    )


def lateness(count: int, within: int = 10) -> tuple[float, float, int]:
    """Proactive lateness p50/p99 in ms: firing time minus the bucket's deadline."""
    samples: list[float] = []
    with tempfile.TemporaryDirectory() as folder:
        daemon = start_daemon(Path(folder))
        try:
            sample_dispatch(
                daemon,
                lambda now, event: samples.append(now - (event.occurred.timestamp() + within)),
            )
            with Client(daemon.rpc_url) as client:
                client.create_automation(
                    {
                        "name": "must finish",
                        "trigger": {
                            "type": "event",
                            "posture": "Proactive",
                            "after": ["bench.started"],
                            "expect": ["bench.finished"],
                            "for_each": ["prefect.resource.id"],
                            "within": within,
                        },
                    }
                )
                for k in range(count):
                    client.emit(
                        [
                            {
                                "occurred": datetime.now(UTC).isoformat(),
                                "event": "bench.started",
                                "resource": {"prefect.resource.id": f"job.{k}"},
                            }
                        ]
                    )
                    time.sleep(2.0 / count)  # spread the deadlines over two seconds
            wait_until(lambda: len(samples) >= count, timeout_s=within + 60)
        finally:
            daemon.stop()
    ordered = sorted(samples)
    return (
        statistics.median(ordered) * 1000,
        ordered[int(0.99 * (len(ordered) - 1))] * 1000,
        len(ordered),
    )


def _kib(path: str, fields: tuple[str, ...]) -> int:
    total = 0
    try:
        for line in Path(path).read_text().splitlines():
            name, _, value = line.partition(":")
            if name in fields:
                total += int(value.split()[0])
    except OSError:
        return 0
    return total


def memory(automations: int, per_actor: int) -> tuple[float, float, int]:
    """Daemon RSS (MB), unique MB per automation actor, and the number of actors."""
    import ray._private.state  # the state API proper needs the dashboard

    with tempfile.TemporaryDirectory() as folder:
        daemon = start_daemon(Path(folder), automations_per_actor=per_actor)
        try:
            with Client(daemon.rpc_url, timeout_s=600) as client:
                for i in range(automations):
                    client.create_automation(reactive(f"m{i}", f"bench.m{i}", threshold=10))
            rss = _kib("/proc/self/status", ("VmRSS",)) / 1024
            pids = [
                info["Pid"]
                for info in ray._private.state.actors().values()
                if info["ActorClassName"] == "AutomationHost"
                and info["State"] == "ALIVE"
                and info.get("Pid")
            ]
            unique = [
                _kib(f"/proc/{pid}/smaps_rollup", ("Private_Clean", "Private_Dirty")) / 1024
                for pid in pids
            ]
            return rss, (statistics.mean(unique) if unique else 0.0), len(pids)
        finally:
            daemon.stop()


def _ticks(pid: int) -> dict[str, int]:
    """CPU ticks (user + system) each thread of a process spent so far, summed by
    thread name (Ray names its threads: io_service, grpc workers...)."""
    spent: dict[str, int] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue  # the thread ended
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        spent[name] = spent.get(name, 0) + int(fields[11]) + int(fields[12])
    return spent


def idle_cpu(
    automations: int, per_actor: int, seconds: float, settle_s: float = 10.0
) -> tuple[float, int, list[tuple[str, float]]]:
    """CPU an idle automation actor uses: % of a core per actor (mean over the actors,
    sampled from /proc over ``seconds`` once ``settle_s`` passed after the last one
    was created), the number of actors, and the busiest thread names with their %
    of a core per actor."""
    import ray._private.state

    with tempfile.TemporaryDirectory() as folder:
        daemon = start_daemon(Path(folder), automations_per_actor=per_actor)
        try:
            with Client(daemon.rpc_url, timeout_s=600) as client:
                for i in range(automations):
                    client.create_automation(reactive(f"i{i}", f"bench.i{i}", threshold=10))
            time.sleep(settle_s)
            pids = [
                int(info["Pid"])
                for info in ray._private.state.actors().values()
                if info["ActorClassName"] == "AutomationHost"
                and info["State"] == "ALIVE"
                and info.get("Pid")
            ]
            before = {pid: _ticks(pid) for pid in pids}
            time.sleep(seconds)
            after = {pid: _ticks(pid) for pid in pids}
        finally:
            daemon.stop()
    hz = os.sysconf("SC_CLK_TCK")
    by_thread: dict[str, int] = {}
    for pid in pids:
        for name, ticks in after[pid].items():
            by_thread[name] = by_thread.get(name, 0) + ticks - before[pid].get(name, 0)
    scale = 100 / hz / seconds / max(len(pids), 1)  # ticks -> % of a core per actor
    threads = sorted(((n, t * scale) for n, t in by_thread.items() if t), key=lambda x: -x[1])
    return sum(by_thread.values()) * scale, len(pids), threads[:8]


def _cases(spec: list[str] | None, quick: bool) -> list[tuple[str, tuple[float, ...]]]:
    """The steps to run: ``--case`` values, or all of them (fewer with --quick)."""
    if spec:
        steps = []
        for item in spec:
            kind, *numbers = item.split(":")
            if kind not in {"throughput", "latency", "lateness", "memory", "idle"}:
                raise SystemExit(
                    f"unknown case {item!r}: throughput:A:P, latency:RATE:SHARE, "
                    "lateness, memory:A:P, idle:A:P"
                )
            steps.append((kind, tuple(float(n) for n in numbers)))
        return steps
    if quick:
        return [
            ("throughput", (10, 1)),
            ("latency", (2000, 10)),
            ("latency", (1000, 1)),
            ("latency", (2000, 1)),
            ("lateness", ()),
            ("memory", (10, 1)),
        ]
    return [
        *(("throughput", (a, p)) for a, p in ((1, 1), (10, 1), (100, 1), (100, 50))),
        *(("latency", (r, s)) for r, s in ((2000, 10), (1000, 1), (2000, 1))),
        ("lateness", ()),
        ("memory", (100, 1)),
        ("memory", (100, 50)),
        ("idle", (100, 1)),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--quick", action="store_true", help="fewer cases, for a smoke run")
    parser.add_argument(
        "--case",
        action="append",
        help="run only this step (repeatable): throughput:AUTOMATIONS:PER_ACTOR, "
        "latency:RATE:ONE_IN, lateness, memory:AUTOMATIONS:PER_ACTOR, "
        "idle:AUTOMATIONS:PER_ACTOR",
    )
    parser.add_argument(
        "--random-ids",
        action="store_true",
        help="publish events with random (version 4) ids instead of time-ordered "
        "(version 7) ones, as Prefect's: each append then lands on a random page "
        "of the event log's id index",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a config setting for the daemons (dotted key, YAML value), e.g. "
        "router.batch_max_events=1024 (repeatable)",
    )
    args = parser.parse_args()
    for setting in args.set:
        key, _, value = setting.partition("=")
        SETTINGS[key] = yaml.safe_load(value)
    if args.random_ids:
        os.environ[RANDOM_IDS_ENV] = "1"
    seconds = 10 if not args.quick else 3
    runtime = RayRuntime(RayConfig())
    runtime.start()
    try:
        for kind, numbers in _cases(args.case, args.quick):
            if kind == "throughput":
                automations, per_actor = int(numbers[0]), int(numbers[1])
                cpu = CpuMeter()
                rate, logged, done = throughput(automations, per_actor, args.events, cpu)
                print(
                    f"throughput {automations:>3} automations, {per_actor:>2}/actor: "
                    f"{rate:>9,.0f} events/s  (logged {logged:,}, evaluated {done:,} of "
                    f"{args.events:,}; CPU per event: daemon "
                    f"{cpu.daemon_s / args.events * 1e6:.0f} us, machine "
                    f"{cpu.machine_s / args.events * 1e6:.0f} us)",
                    flush=True,
                )
            elif kind == "latency":
                rate, share = numbers[0], int(numbers[1])
                p50, p99, n = latency(rate, seconds=seconds, firing_share=share)
                print(
                    f"publish-to-firing at {rate:,.0f} events/s, 1 in {share} firing: "
                    f"p50 {p50:.1f} ms, p99 {p99:.1f} ms ({n} firings)",
                    flush=True,
                )
            elif kind == "lateness":
                p50, p99, n = lateness(200 if not args.quick else 20)
                print(
                    f"proactive lateness: p50 {p50:.1f} ms, p99 {p99:.1f} ms ({n} deadlines)",
                    flush=True,
                )
            elif kind == "idle":
                automations, per_actor = int(numbers[0]), int(numbers[1])
                share, actors, threads = idle_cpu(
                    automations, per_actor, 30 if not args.quick else 5
                )
                busiest = ", ".join(f"{name} {pct:.2f}" for name, pct in threads)
                print(
                    f"idle {automations} automations, {per_actor}/actor: {share:.2f} % of a core "
                    f"per actor ({actors} actors, {share * actors / 100:.2f} cores in all; "
                    f"by thread, % per actor: {busiest})",
                    flush=True,
                )
            else:
                automations, per_actor = int(numbers[0]), int(numbers[1])
                rss, unique, actors = memory(automations, per_actor)
                print(
                    f"memory {automations} automations, {per_actor}/actor: daemon RSS "
                    f"{rss:.0f} MB, {actors} actors, {unique:.0f} MB unique each",
                    flush=True,
                )
    finally:
        runtime.shutdown()


if __name__ == "__main__":
    main()
