"""Every row of issue 22's table, measured now, in one run (not a test).

    .venv/bin/python bench/speed.py [--quick] [--prefect] [--fleet [N]]

Prints each row as soon as it is measured, then all of them as one table,
each rate with the CPU time per event (or per action) next to it:
  * ``marmot replay`` (the real CLI, a child process, imports included) on
    issue 22's stream: ``../shared/bench/speed_scenario.py 100 N 0.1``,
    written once into ``bench/.cache/``; CPU is the child's (getrusage).
    With ``--prefect``, Prefect's own trigger engine on the same stream
    (``bench/prefect_oracle.py run``; minutes). Each is also run on a
    100-event stream, to give its rate and CPU past its start-up too;
  * the daemon from ZeroMQ PUSH to evaluated, one actor per automation and
    50 automations per actor (``bench/daemon.py``'s ``throughput``);
  * ``call-webhook`` actions through the default executor pool to a fast
    local receiver, flat out, and publish to webhook call received at
    1 event/s and at 2,000 events/s with one event in 10 firing
    (``bench/actions.py``'s ``run``);
  * what idling costs on this host (``bench/idle.py``): one event decoded
    and one Ray actor call, busy and after the process slept, which the
    latency rows mostly measure on a host where waking is slow;
  * with ``--fleet``, ``bench/fleet.py``'s rows (10,000 automations, or N;
    tens of minutes), run as its own process.

CPU per event: "daemon" is the benchmark's own process, where the daemon
runs (automation actors and executors are Ray workers outside it); "machine"
is every process of the host, so other work on it counts too.
``--quick`` is a smoke run of a few minutes: small counts, fewer automations.
"""

from __future__ import annotations

import argparse
import re
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/daemon.py, bench/actions.py

import actions
import daemon
import idle

from marmot.actors.runtime import RayRuntime
from marmot.config import RayConfig, load_config

BENCH = Path(__file__).resolve().parent
SCENARIO_SCRIPT = BENCH.parents[1] / "shared" / "bench" / "speed_scenario.py"
CACHE = BENCH / ".cache"
MARMOT = str(Path(sys.executable).with_name("marmot"))


@dataclass(frozen=True)
class Row:
    """One line of the table: what was measured, the figure, its CPU cost, the goal."""

    measure: str
    result: str
    cpu: str
    target: str


@dataclass(frozen=True)
class Sizes:
    """How much each step runs: the full run's counts, or --quick's."""

    replay_events: int
    prefect_events: int
    daemon_events: int
    one_actor_automations: int
    packed_automations: int
    webhook_firings: int
    slow_firings: int
    fast_firings: int
    fleet_events: int


FULL = Sizes(
    replay_events=100_000,
    prefect_events=100_000,
    daemon_events=100_000,
    one_actor_automations=100,
    packed_automations=100,
    webhook_firings=3_000,
    slow_firings=30,
    fast_firings=2_000,
    fleet_events=200_000,
)
QUICK = Sizes(
    replay_events=20_000,
    prefect_events=2_000,
    daemon_events=20_000,
    one_actor_automations=10,
    packed_automations=100,
    webhook_firings=300,
    slow_firings=5,
    fast_firings=200,
    fleet_events=20_000,
)


class Table(list[Row]):
    """Rows printed as they are measured (a full run takes many minutes)."""

    def append(self, row: Row) -> None:
        super().append(row)
        cpu = f"  [CPU {row.cpu}]" if row.cpu else ""
        print(f"* {row.measure}: {row.result}{cpu}", flush=True)

    def render(self) -> str:
        """The rows as one Markdown table, for the README or a closing note."""
        header = ("measure", "now", "CPU per event / action", "target")
        lines = [f"| {' | '.join(header)} |", f"|{'---|' * len(header)}"]
        for row in self:
            lines.append(f"| {row.measure} | {row.result} | {row.cpu or '-'} | {row.target} |")
        return "\n".join(lines)


def _run_child(argv: list[str]) -> tuple[float, float]:
    """Run ``argv`` to its end (output dropped): wall seconds and its CPU seconds."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - began
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime


def scenario(events: int) -> Path:
    """Issue 22's replay stream with ``events`` events, written once and kept in
    bench/.cache/ (rewritten when the script changed since)."""
    if not SCENARIO_SCRIPT.exists():
        raise SystemExit(f"{SCENARIO_SCRIPT} is missing: it writes the replay stream")
    CACHE.mkdir(exist_ok=True)
    path = CACHE / f"speed-100-{events}-0.1.json"
    if not path.exists() or path.stat().st_mtime < SCENARIO_SCRIPT.stat().st_mtime:
        partial = path.with_suffix(".tmp")
        subprocess.run(
            [sys.executable, str(SCENARIO_SCRIPT), "100", str(events), "0.1", str(partial)],
            check=True,
        )
        partial.replace(path)
    return path


# Events in the stream that times a command's start-up (imports, set-up).
PROBE_EVENTS = 100


@dataclass(frozen=True)
class Timed:
    """A command run on the stream, and on a PROBE_EVENTS stream to time its
    start-up: rates end to end and past the start-up, CPU per event likewise."""

    events: int
    wall_s: float
    cpu_s: float
    start_wall_s: float
    start_cpu_s: float

    @property
    def rate(self) -> float:
        return self.events / self.wall_s

    @property
    def steady_rate(self) -> float:
        """Events/s once started: the extra events over the extra wall time."""
        return (self.events - PROBE_EVENTS) / max(self.wall_s - self.start_wall_s, 1e-9)

    @property
    def steady_cpu_us(self) -> float:
        return (self.cpu_s - self.start_cpu_s) / (self.events - PROBE_EVENTS) * 1e6

    def figures(self) -> tuple[str, str]:
        """The result and CPU columns of its row."""
        return (
            f"{self.rate:,.0f} events/s end to end ({self.wall_s:.1f} s); "
            f"{self.steady_rate:,.0f} events/s past its start-up ({self.start_wall_s:.1f} s)",
            f"{self.cpu_s / self.events * 1e6:,.1f} µs end to end, "
            f"{self.steady_cpu_us:,.1f} µs past start-up",
        )


def timed(command: list[str], events: int) -> Timed:
    """Run ``command + [scenario file]`` on the stream and on the start-up probe."""
    start_wall, start_cpu = _run_child([*command, str(scenario(PROBE_EVENTS))])
    wall, cpu = _run_child([*command, str(scenario(events))])
    return Timed(events, wall, cpu, start_wall, start_cpu)


def replay_rows(table: Table, sizes: Sizes, with_prefect: bool) -> None:
    """``marmot replay`` on the stream; Prefect's engine on it too if asked."""
    ours = timed([MARMOT, "replay"], sizes.replay_events)
    result, cpu = ours.figures()
    table.append(
        Row(
            f"`marmot replay` CLI, 100 automations, 10 % hit, {ours.events:,} events",
            result,
            f"{cpu} (the CLI process)",
            "≥ 250k events/s",
        )
    )
    if not with_prefect:
        return
    oracle = [sys.executable, str(BENCH / "prefect_oracle.py"), "run"]
    theirs = timed(oracle, sizes.prefect_events)
    result, cpu = theirs.figures()
    same = (
        f", {ours.rate / theirs.rate:,.0f}x end to end"
        if theirs.events == ours.events
        else f" (Prefect on {theirs.events:,} events)"
    )
    table.append(
        Row(
            f"Prefect's own engine, same stream, {theirs.events:,} events",
            f"{result}; marmot replay {ours.steady_rate / theirs.steady_rate:,.0f}x "
            f"Prefect past start-up{same}",
            f"{cpu} (the oracle process)",
            "marmot ≥ 150x Prefect",
        )
    )


def daemon_rows(table: Table, sizes: Sizes) -> None:
    """PUSH to evaluated: one actor per automation, then 50 automations per actor."""
    cases = (
        (sizes.one_actor_automations, 1, "≥ 50k events/s, daemon ≤ 8 µs per event"),
        (sizes.packed_automations, 50, "≥ 100k events/s"),
    )
    for automations, per_actor, target in cases:
        cpu = daemon.CpuMeter()
        rate, logged, done = daemon.throughput(automations, per_actor, sizes.daemon_events, cpu)
        layout = "one actor each" if per_actor == 1 else f"{per_actor} per actor"
        table.append(
            Row(
                f"daemon, PUSH → evaluated, {automations} automations {layout}, "
                f"{sizes.daemon_events:,} events",
                f"{rate:,.0f} events/s (logged {logged:,}, evaluated {done:,})",
                f"daemon {cpu.daemon_s / sizes.daemon_events * 1e6:.1f} µs, "
                f"machine {cpu.machine_s / sizes.daemon_events * 1e6:.1f} µs",
                target,
            )
        )


def action_rows(table: Table, sizes: Sizes) -> None:
    """call-webhook flat out, then publish to delivered at 1 and 2,000 events/s."""
    pool = load_config(None, env={}).executors.pool_size
    rate, p50, p99, cpu, machine = actions.run(sizes.webhook_firings, pool)
    table.append(
        Row(
            f"`call-webhook` through the default pool ({pool} executors), flat out, "
            f"{sizes.webhook_firings:,} firings",
            f"{rate:,.0f} actions/s",
            f"daemon {cpu:,.0f} µs, machine {machine:,.0f} µs",
            "≥ 1,000 actions/s",
        )
    )
    _, p50, p99, cpu, machine = actions.run(sizes.slow_firings, pool, rate=1)
    table.append(
        Row(
            f"publish → webhook call received, 1 event/s, {sizes.slow_firings} firings",
            f"p50 {p50:.1f} ms, p99 {p99:.1f} ms",
            f"daemon {cpu:,.0f} µs, machine {machine:,.0f} µs (a second of idling each)",
            "p50 ≤ 5 ms",
        )
    )
    _, p50, p99, cpu, machine = actions.run(sizes.fast_firings, pool, rate=2000, one_in=10)
    table.append(
        Row(
            f"publish → webhook call received, 2,000 events/s, 1 in 10 firing, "
            f"{sizes.fast_firings:,} firings",
            f"p50 {p50:.1f} ms, p99 {p99:.1f} ms",
            f"daemon {cpu:,.0f} µs, machine {machine:,.0f} µs (per action)",
            "p99 ≤ 20 ms",
        )
    )


def idle_rows(table: Table) -> None:
    """The host's cost of waking (``bench/idle.py``): context for the latency rows."""
    for what, rows in (
        ("one event decoded", idle.decode_profile()),
        ("one Ray actor call", idle.ray_call_profile()),
    ):
        table.append(
            Row(f"this host: {what}, busy and after idling", idle.render(rows), "", "(context)")
        )


FLEET_TARGETS = {
    "create": "≤ 60 s",
    "restart to serving": "≤ 30 s",
    "memory, daemon + Ray": "≤ 3 GB",
    "throughput": "≥ 20,000 events/s",
    "proactive lateness": "p99 ≤ 50 ms",
    "automation ls": "≤ 1 s",
    "status": "≤ 1 s",
}


def fleet_rows(table: Table, automations: int, events: int) -> None:
    """bench/fleet.py in its own process; each of its lines becomes a row."""
    command = [
        sys.executable,
        str(BENCH / "fleet.py"),
        "--automations",
        str(automations),
        "--events",
        str(events),
    ]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as process:
        assert process.stdout is not None
        for line in process.stdout:
            parts = re.split(r"\s{2,}", line.strip(), maxsplit=1)
            if len(parts) != 2:
                print(line, end="", flush=True)  # not one of its rows: pass it on
                continue
            label, value = parts
            target = next((t for k, t in FLEET_TARGETS.items() if label.startswith(k)), "")
            cpu = ""
            if "(CPU per event:" in value:
                value, _, cpu = value.partition(" (CPU per event: ")
                cpu = cpu.rstrip(")")
            table.append(Row(f"fleet of {automations:,}: {label}", value, cpu, target))
    if process.returncode:
        raise SystemExit(f"bench/fleet.py failed (exit {process.returncode})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small counts: a smoke run")
    parser.add_argument(
        "--prefect",
        action="store_true",
        help="also run Prefect's own engine on the replay stream (minutes)",
    )
    parser.add_argument(
        "--fleet",
        type=int,
        nargs="?",
        const=10_000,
        metavar="N",
        help="also run bench/fleet.py with N automations (10,000 if no N; tens of minutes)",
    )
    args = parser.parse_args()
    sizes = QUICK if args.quick else FULL
    table = Table()
    began = time.perf_counter()
    replay_rows(table, sizes, args.prefect)
    runtime = RayRuntime(RayConfig())
    runtime.start()
    try:
        daemon_rows(table, sizes)
        action_rows(table, sizes)
        idle_rows(table)
    finally:
        runtime.shutdown()
    if args.fleet:
        fleet_rows(table, args.fleet, sizes.fleet_events)
    print(f"\nissue 22, measured in {time.perf_counter() - began:.0f} s:\n", flush=True)
    print(table.render(), flush=True)


if __name__ == "__main__":
    main()
