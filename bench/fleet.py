"""A large fleet on one node (issue 22): 10,000 automations by default (not a test).

    .venv/bin/python bench/fleet.py [--automations 10000] [--events 200000]

Runs ``marmot serve`` as its own process on its embedded defaults
(automations_per_actor: auto) in a temporary folder, and measures it from
outside, as an operator would:
  * creating the automations from YAML files with ``marmot automation create -f``;
  * ``marmot automation ls`` and ``marmot status`` (wall time of the command);
  * memory of the whole daemon with Ray: the proportional set size (PSS) of
    the ``marmot serve`` process and every process under it;
  * throughput: events pushed flat out over ZeroMQ until the daemon has
    routed all of them, with CPU per event (daemon tree and machine);
  * proactive lateness: firing time minus the window's deadline for 1,000
    deadlines spread over two seconds, read from the ``automation.triggered``
    events in the log;
  * restart to serving: SIGTERM, then a new ``marmot serve`` on the same
    folder until ``marmot status`` says serving; once right away, and once
    after the daemon was down for a minute (``--down-s``), as after an outage:
    the proactive windows that ended meanwhile fire as the fleet recovers.

The fleet: every automation expects 1 % of the event names (10 of 1,000), a
mix of reactive (60 %), proactive (20 %) and compound (20 %) triggers, 10 %
with ``for_each``; like most real automations (a deployment's, a flow's)
90 % also match one resource of the 1,000 the events come from.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from daemon import CpuMeter

from marmot.transport.client import Client
from marmot.transport.event_ids import new_event_id

# Set by --random-ids (read again in the publisher process).
RANDOM_IDS_ENV = "MARMOT_BENCH_RANDOM_IDS"
NAMES = 1000
RESOURCES = 1000
MARMOT = str(Path(sys.executable).with_name("marmot"))


def _name(k: int) -> str:
    return f"fleet.name.{k}"


def _resource(k: int) -> str:
    return f"fleet.resource.{k}"


def _event_trigger(rng: random.Random, names: list[str], **extra: Any) -> dict[str, Any]:
    trigger: dict[str, Any] = {
        "type": "event",
        "expect": names,
        "threshold": rng.choice([1, 2, 5]),
        "within": rng.choice([30, 60, 300]),
        **extra,
    }
    return trigger


def fleet(count: int, seed: int = 7) -> list[dict[str, Any]]:
    """The automation documents (Prefect's YAML shape)."""
    rng = random.Random(seed)
    documents = []
    for i in range(count):
        names = [_name(k) for k in rng.sample(range(NAMES), NAMES // 100)]
        match = {"prefect.resource.id": _resource(rng.randrange(RESOURCES))}
        scoped = {"match": match} if rng.random() < 0.9 else {}
        for_each = {"for_each": ["prefect.resource.id"]} if rng.random() < 0.1 else {}
        kind = rng.random()
        if kind < 0.6:
            trigger = _event_trigger(rng, names, posture="Reactive", **scoped, **for_each)
        elif kind < 0.8:
            trigger = _event_trigger(
                rng, names[1:], posture="Proactive", after=names[:1], **scoped, **for_each
            )
            trigger["threshold"] = 1
        else:
            half = len(names) // 2
            trigger = {
                "type": "compound",
                "require": rng.choice(["any", "all"]),
                "within": 300,
                "triggers": [
                    _event_trigger(rng, names[:half], **scoped),
                    _event_trigger(rng, names[half:], **scoped),
                ],
            }
        documents.append(
            {"name": f"fleet {i}", "trigger": trigger, "actions": [{"type": "do-nothing"}]}
        )
    return documents


def _lateness_automation(within: int, name: str) -> dict[str, Any]:
    return {
        "name": name,
        "trigger": {
            "type": "event",
            "posture": "Proactive",
            "after": ["fleet.lateness.started"],
            "expect": ["fleet.lateness.finished"],
            "for_each": ["prefect.resource.id"],
            "threshold": 1,
            "within": within,
        },
        "actions": [{"type": "do-nothing"}],
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Serve:
    """``marmot serve`` in its own process group, on a folder and fixed ports."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.rpc_url = f"tcp://127.0.0.1:{_free_port()}"
        self.ingest_url = f"tcp://127.0.0.1:{_free_port()}"
        self.process: subprocess.Popen[bytes] | None = None

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "MARMOT_DATA_DIR": str(self.folder / "data"),
            "MARMOT_RPC_URL": self.rpc_url,
            "MARMOT_INGEST_PULL_URL": self.ingest_url,
            "MARMOT_HTTP_ENABLED": "false",
            "MARMOT_LOG_LEVEL": "WARNING",
        }

    def start(self) -> float:
        """Start; returns seconds until ``marmot status`` says serving."""
        started = time.perf_counter()
        log = open(self.folder / "serve.log", "ab")  # noqa: SIM115 (the child keeps it)
        self.process = subprocess.Popen(
            [MARMOT, "serve"], env=self.env(), stdout=log, stderr=log, start_new_session=True
        )
        self.cli("status", "--wait", "600")
        return time.perf_counter() - started

    def stop(self) -> float:
        """SIGTERM and wait; returns seconds it took."""
        assert self.process is not None
        started = time.perf_counter()
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(300)
        return time.perf_counter() - started

    def cli(self, *args: str) -> float:
        """Run ``marmot ARGS`` against this daemon; returns its wall time."""
        started = time.perf_counter()
        subprocess.run(
            [MARMOT, *args, "--url", self.rpc_url, "--timeout", "600"],
            env=self.env(),
            check=True,
            stdout=subprocess.DEVNULL,
        )
        return time.perf_counter() - started

    def tree(self) -> list[int]:
        """The pids of ``marmot serve`` and every process under it."""
        assert self.process is not None
        children: dict[int, list[int]] = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text()
                except OSError:
                    continue
                parent = int(stat.rpartition(")")[2].split()[1])
                children.setdefault(parent, []).append(int(entry.name))
        found, todo = [], [self.process.pid]
        while todo:
            pid = todo.pop()
            found.append(pid)
            todo.extend(children.get(pid, []))
        return found

    def pss_mb(self) -> float:
        total = 0
        for pid in self.tree():
            try:
                for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
            except OSError:
                continue
        return total / 1024

    def cpu_s(self) -> float:
        return sum(self.cpu_by_process().values())

    def cpu_by_process(self) -> dict[str, float]:
        """CPU seconds so far of each process in the tree, by a readable name
        (``daemon``, Ray's process title such as ``ray::AutomationHost``, or
        the program), with the pid."""
        found: dict[str, float] = {}
        tick = os.sysconf("SC_CLK_TCK")
        for pid in self.tree():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if self.process is not None and pid == self.process.pid:
                name = "daemon"
            else:
                name = Path(argv[0].decode(errors="replace")).name.split(" ")[0] or "?"
            found[f"{name}[{pid}]"] = (int(fields[11]) + int(fields[12])) / tick
        return found


def _blast(url: str, count: int, seed: int) -> None:
    import zmq

    from marmot.engine.models.events import Event
    from marmot.transport.codec import events_frame

    rng = random.Random(seed)
    now = datetime.now(UTC)
    events = [
        Event.model_validate(
            {
                "id": str(uuid4() if os.environ.get(RANDOM_IDS_ENV) else new_event_id()),
                "occurred": now,
                "event": _name(rng.randrange(NAMES)),
                "resource": {"prefect.resource.id": _resource(rng.randrange(RESOURCES))},
            }
        )
        for _ in range(count)
    ]
    frames = [events_frame(events[i : i + 200]) for i in range(0, count, 200)]
    sock = zmq.Context.instance().socket(zmq.PUSH)
    sock.setsockopt(zmq.LINGER, 60_000)
    sock.connect(url)
    for frame in frames:
        sock.send(frame)
    sock.close()


def _profile(serve: Serve, folder: Path, seconds: int) -> list[subprocess.Popen[bytes]]:
    """py-spy (next to the interpreter) recording the daemon and its Ray workers for
    ``seconds``, as collapsed stacks in ``folder`` (one file per process)."""
    spy = str(Path(sys.executable).with_name("py-spy"))
    folder.mkdir(parents=True, exist_ok=True)
    spies = []
    for pid in serve.tree():
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if not any(k in command for k in ("python", "marmot", "ray::")):
            continue  # Ray's own binaries (raylet, gcs_server)
        kind = "daemon" if pid == (serve.process.pid if serve.process else -1) else "worker"
        out = folder / f"{kind}-{pid}.txt"
        options = ["--rate", "200", "--format", "raw", "--output", str(out), "--nonblocking"]
        spies.append(
            subprocess.Popen(
                [spy, "record", "--pid", str(pid), "--duration", str(seconds), *options],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
    return spies


def _outside(status: dict[str, Any]) -> int:
    """Events accepted from outside (not the daemon's own automation.* events)."""
    by_source: dict[str, int] = status["events_by_source"]
    return sum(n for source, n in by_source.items() if source != "automation")


def throughput(
    serve: Serve, client: Client, count: int, profile: Path | None = None
) -> tuple[float, float, float]:
    """Events/s PUSH -> routed, and CPU per event (µs): daemon tree, machine."""
    first = client.status()
    before = _outside(first)
    own_before = first["events_by_source"].get("automation", 0)
    process = multiprocessing.get_context("spawn").Process(
        target=_blast, args=(serve.ingest_url, count, 11)
    )
    process.start()
    # Timed from the first event the daemon receives, not from the publisher's set-up.
    while _outside(client.status()) == before:
        time.sleep(0.005)
    spies = _profile(serve, profile, 20) if profile is not None else []
    meter, by_process = CpuMeter(), serve.cpu_by_process()
    tree_cpu = sum(by_process.values())
    meter.start()
    started = time.perf_counter()
    while True:
        status = client.status()
        if _outside(status) - before >= count and status["queued_events"] == 0:
            break
        time.sleep(0.1)  # polling status costs the daemon too
    elapsed = time.perf_counter() - started
    meter.stop()
    process.join(60)
    after = serve.cpu_by_process()
    tree = (sum(after.values()) - tree_cpu) / count * 1e6
    used = {k: v - by_process.get(k, 0.0) for k, v in after.items()}
    grouped: dict[str, float] = {}
    for key, seconds in used.items():
        grouped[key.partition("[")[0]] = grouped.get(key.partition("[")[0], 0.0) + seconds
    print(
        "  CPU per event by process (µs): "
        + ", ".join(
            f"{k} {v / count * 1e6:.1f}"
            for k, v in sorted(grouped.items(), key=lambda kv: -kv[1])
            if v / count * 1e6 >= 1
        ),
        flush=True,
    )
    own = client.status()["events_by_source"].get("automation", 0) - own_before
    print(f"  the daemon's own events (automation.*) during the run: {own:,}", flush=True)
    for spy in spies:
        spy.wait(60)
    return count / elapsed, tree, meter.machine_s / count * 1e6


def lateness(
    client: Client, within: int = 10, count: int = 1000, name: str = "fleet lateness"
) -> tuple[float, float, int]:
    """Proactive lateness p50 / p99 (ms): firing time minus the deadline."""
    automation = client.create_automation(_lateness_automation(within, name))
    deadlines: dict[str, datetime] = {}
    for k in range(count):
        occurred = datetime.now(UTC)
        resource = f"fleet.job.{name}.{k}"
        client.emit(
            [
                {
                    "occurred": occurred.isoformat(),
                    "event": "fleet.lateness.started",
                    "resource": {"prefect.resource.id": resource},
                }
            ]
        )
        deadlines[resource] = occurred + timedelta(seconds=within)
        time.sleep(2.0 / count)
    time.sleep(within + 3)
    samples: list[float] = []
    seen: set[str] = set()
    after: int | None = None
    while True:
        page = client.filter_events(
            names=["prefect.automation.triggered"], limit=1000, after_seq=after or 0
        )
        if not page:
            break
        after = page[-1]["seq"]
        for event in page:
            if event["resource"]["prefect.resource.id"] != f"prefect.automation.{automation.id}":
                continue
            key = event["payload"]["triggering_labels"].get("prefect.resource.id")
            if key in deadlines and key not in seen:
                seen.add(key)
                fired = datetime.fromisoformat(event["occurred"])
                samples.append((fired - deadlines[key]).total_seconds() * 1000)
    samples.sort()
    if not samples:
        return float("nan"), float("nan"), 0
    return statistics.median(samples), samples[int(0.99 * (len(samples) - 1))], len(samples)


class _Rows(list[tuple[str, str]]):
    """Printed as they are measured (a run takes minutes)."""

    def append(self, row: tuple[str, str]) -> None:
        super().append(row)
        print(f"{row[0]:<50}  {row[1]}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--automations", type=int, default=10_000)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--files", type=int, default=10, help="YAML files to spread them over")
    parser.add_argument(
        "--profile",
        type=Path,
        help="record the daemon and its Ray workers with py-spy during the throughput run "
        "(20 s, collapsed stacks in this folder; the figures then include py-spy's cost)",
    )
    parser.add_argument(
        "--only-throughput", action="store_true", help="stop after the throughput run"
    )
    parser.add_argument(
        "--down-s",
        type=float,
        default=60.0,
        help="how long the daemon stays down before the last restart (default 60)",
    )
    parser.add_argument(
        "--random-ids",
        action="store_true",
        help="publish events with random (version 4) ids instead of time-ordered "
        "(version 7) ones, as Prefect's",
    )
    args = parser.parse_args()
    if args.random_ids:
        os.environ[RANDOM_IDS_ENV] = "1"
    rows = _Rows()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        documents = fleet(args.automations)
        files = []
        per_file = -(-len(documents) // args.files)
        for i in range(0, len(documents), per_file):
            path = folder / f"fleet-{i // per_file}.yaml"
            path.write_text(yaml.safe_dump({"automations": documents[i : i + per_file]}))
            files.append(str(path))
        serve = Serve(folder)
        rows.append(("start, empty (s)", f"{serve.start():.1f}"))
        try:
            create = serve.cli("automation", "create", *[a for f in files for a in ("-f", f)])
            rows.append((f"create {args.automations} from {len(files)} files (s)", f"{create:.1f}"))
            with Client(serve.rpc_url, timeout_s=600) as client:
                status = client.status()
                rows.append(("automation actors", str(status["automation_actors"])))
                rows.append(("layout", json.dumps(status["layout"])))
            time.sleep(5)  # moved automations settle
            rows.append(("automation ls (s)", f"{serve.cli('automation', 'ls'):.2f}"))
            rows.append(("status (s)", f"{serve.cli('status'):.2f}"))
            rows.append(("memory, daemon + Ray, PSS (MB)", f"{serve.pss_mb():.0f}"))
            with Client(serve.rpc_url, timeout_s=600) as client:
                rate, tree, machine = throughput(serve, client, args.events, args.profile)
                rows.append(
                    (
                        f"throughput, {args.events} events (events/s)",
                        f"{rate:,.0f} (CPU per event: daemon+Ray {tree:.1f} µs, "
                        f"machine {machine:.1f} µs)",
                    )
                )
                if args.only_throughput:
                    return
                p50, p99, n = lateness(client)
                rows.append(
                    (f"proactive lateness ({n} firings) p50 / p99 (ms)", f"{p50:.1f} / {p99:.1f}")
                )
                # The same while events come flat out: a deadline is evaluated after
                # the events received before it, so it waits for the batch in progress.
                blast = multiprocessing.get_context("spawn").Process(
                    target=_blast, args=(serve.ingest_url, args.events, 13)
                )
                before = _outside(client.status())
                blast.start()
                while _outside(client.status()) == before:  # the publisher is sending
                    time.sleep(0.01)
                p50, p99, n = lateness(client, name="fleet lateness under load")
                blast.join(600)
                rows.append(
                    (
                        f"proactive lateness under load ({n} firings) p50 / p99 (ms)",
                        f"{p50:.1f} / {p99:.1f}",
                    )
                )
            rows.append(("memory after the load, PSS (MB)", f"{serve.pss_mb():.0f}"))
            rows.append(("stop (s)", f"{serve.stop():.1f}"))
            rows.append(("restart to serving (s)", f"{serve.start():.1f}"))
            rows.append(("memory after restart, PSS (MB)", f"{serve.pss_mb():.0f}"))
            with Client(serve.rpc_url, timeout_s=600) as client:
                rows.append(
                    ("automation actors after restart", str(client.status()["automation_actors"]))
                )
            # An outage: while the daemon is down, proactive windows end; as it recovers,
            # they fire late and their events go to the log the others still replay.
            serve.stop()
            time.sleep(args.down_s)
            rows.append((f"restart after {args.down_s:g} s down (s)", f"{serve.start():.1f}"))
        finally:
            if serve.process is not None and serve.process.poll() is None:
                serve.stop()


if __name__ == "__main__":
    main()
