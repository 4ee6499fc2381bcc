"""Engine benchmarks: print events/s and bytes per bucket (not a test).

    .venv/bin/python bench/engine.py [--events N]

Figures printed:
  * events/s through the engine (interest index + evaluators) with 1 and 100
    automations, 10 % of events concerning one of them;
  * events/s with for_each over 100k distinct keys (every event hits a bucket);
  * bytes per open bucket (tracemalloc, 100k open buckets);
  * events/s and bytes per key for held expect events (SEMANTICS §3.4: a
    Proactive trigger with `after`, 100k keys each holding one event);
  * events/s of `marmot replay` end to end (read + validate + evaluate) on a
    100k-event JSON-lines file, in process and through the CLI;
  * the same, with CPU µs per event, on issue 22's replay stream
    (../shared/bench/speed_scenario.py 100 N 0.1: a scenario file).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

from marmot import cli as replay_command
from marmot.documents import load_automations, read_events
from marmot.engine.interest import InterestIndex
from marmot.engine.models.automations import Automation
from marmot.engine.models.events import Event
from marmot.engine.replay import Replay
from marmot.engine.triggers.evaluator import Evaluator

START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
RESOURCES = 1000


def automation_doc(i: int, *, for_each: bool = True) -> dict[str, Any]:
    trigger: dict[str, Any] = {
        "type": "event",
        "posture": "Reactive",
        "expect": [f"app.job-{i}.failed"],
        "threshold": 5,
        "within": 60,
    }
    if for_each:
        trigger["for_each"] = ["prefect.resource.id"]
    return {
        "id": str(UUID(int=i + 1)),
        "name": f"job-{i} failing",
        "trigger": trigger,
        "actions": [{"type": "do-nothing"}],
    }


def event_docs(n: int, automations: int, hit_ratio: float, seed: int = 7) -> list[dict[str, Any]]:
    """A stream where ``hit_ratio`` of events concern one of the automations."""
    rng = random.Random(seed)
    docs = []
    for k in range(n):
        if rng.random() < hit_ratio:
            name = f"app.job-{rng.randrange(automations)}.failed"
        else:
            name = f"noise.kind-{rng.randrange(50)}.happened"
        occurred = START + timedelta(milliseconds=10 * k)
        docs.append(
            {
                "id": str(UUID(int=k + 1_000_000)),
                "occurred": occurred.isoformat().replace("+00:00", "Z"),
                "event": name,
                "resource": {
                    "prefect.resource.id": f"prefect.flow-run.{rng.randrange(RESOURCES)}",
                    "prefect.resource.name": "run",
                },
                "related": [
                    {"prefect.resource.id": "prefect.flow.1", "prefect.resource.role": "flow"}
                ],
                "payload": {},
            }
        )
    return docs


def engine_rate(automations: int, n: int) -> float:
    """Events/s through interest routing + evaluation, events already parsed."""
    models = [Automation.model_validate(automation_doc(i)) for i in range(automations)]
    evaluators = [Evaluator(a) for a in models]
    index: InterestIndex[int] = InterestIndex()
    for i, ev in enumerate(evaluators):
        index.set(i, [leaf.matcher for leaf in ev.leaves])
    events = [Event.model_validate(d) for d in event_docs(n, automations, 0.10)]
    firings = 0
    began = time.perf_counter()
    for event in events:
        for i in index.route(event):
            firings += len(evaluators[i].apply((event,)))
    elapsed = time.perf_counter() - began
    return n / elapsed


def for_each_rate(keys: int) -> tuple[float, float]:
    """Events/s when every event opens or hits a bucket; bytes per open bucket."""
    automation = Automation.model_validate(
        {
            "id": str(UUID(int=99)),
            "name": "per key",
            "trigger": {
                "type": "event",
                "expect": ["app.tick"],
                "for_each": ["prefect.resource.id"],
                "threshold": 1000,
                "within": 3600,
            },
        }
    )
    events = [
        Event(
            id=UUID(int=k + 1),
            occurred=START + timedelta(microseconds=k),
            event="app.tick",
            resource={"prefect.resource.id": f"prefect.flow-run.{k}"},
        )
        for k in range(keys)
    ]
    evaluator = Evaluator(automation)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    began = time.perf_counter()
    evaluator.apply(events)
    elapsed = time.perf_counter() - began
    # Only the bucket state counts: drop the events (each bucket keeps its key
    # string; reactive buckets keep only the last event's id).
    del events
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert evaluator.open_buckets == keys
    return keys / elapsed, (after - before) / keys


def held_rate(keys: int) -> tuple[float, float]:
    """Events/s when every event is held (no `after` seen yet); bytes per held key."""
    automation = Automation.model_validate(
        {
            "id": str(UUID(int=98)),
            "name": "held per key",
            "trigger": {
                "type": "event",
                "posture": "Proactive",
                "after": ["app.started"],
                "expect": ["app.finished"],
                "for_each": ["prefect.resource.id"],
                "within": 60,
            },
        }
    )
    events = [
        Event(
            id=UUID(int=k + 1),
            occurred=START + timedelta(microseconds=k),
            event="app.finished",
            resource={"prefect.resource.id": f"prefect.flow-run.{k}"},
        )
        for k in range(keys)
    ]
    evaluator = Evaluator(automation)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    began = time.perf_counter()
    evaluator.apply(events)
    elapsed = time.perf_counter() - began
    del events  # the held entries keep the id; the key string is the bucketing key
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    held = evaluator.leaves[0].held
    assert held is not None and len(held) == keys
    return keys / elapsed, (after - before) / keys


def _cli_run(argv: list[str]) -> tuple[float, float]:
    """Run ``marmot ARGV`` (output dropped); its wall and CPU seconds."""
    marmot = str(Path(sys.executable).with_name("marmot"))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    subprocess.run([marmot, *argv], check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - began
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return wall, cpu


def scenario_replay(n: int) -> tuple[float, float, float, float] | None:
    """Issue 22's replay stream (shared/bench/speed_scenario.py: 100 automations,
    ``n`` events, 10 % hit) through `marmot replay SCENARIO.json`: events/s and
    CPU µs per event in process (file read, decode and replay, after imports),
    then through the CLI end to end (imports included). None without the script."""
    script = Path(__file__).resolve().parents[2] / "shared" / "bench" / "speed_scenario.py"
    if not script.exists():
        return None
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "speed.json"
        subprocess.run([sys.executable, str(script), "100", str(n), "0.1", str(path)], check=True)
        began, cpu = time.perf_counter(), time.process_time()
        with contextlib.redirect_stdout(io.StringIO()):
            replay_command.main(["replay", str(path)])
        wall, cpu = time.perf_counter() - began, time.process_time() - cpu
        cli_wall, cli_cpu = _cli_run(["replay", str(path)])
    return n / wall, cpu / n * 1e6, n / cli_wall, cli_cpu / n * 1e6


def replay_rate(n: int, automations: int) -> tuple[float, float]:
    """End-to-end events/s: in process, and through `marmot replay --json`."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        autos = folder / "automations.json"
        autos.write_text(json.dumps([automation_doc(i) for i in range(automations)]))
        stream = folder / "events.jsonl"
        with stream.open("w") as fh:
            for doc in event_docs(n, automations, 0.10):
                fh.write(json.dumps(doc) + "\n")
        began = time.perf_counter()
        models = load_automations(autos)
        events = read_events(stream)
        Replay(models, start=START, tick=0).run(events, events[-1].occurred)
        in_process = n / (time.perf_counter() - began)
        began = time.perf_counter()
        marmot = str(Path(sys.executable).with_name("marmot"))
        subprocess.run(
            [marmot, "replay", "--automations", str(autos), "--events", str(stream), "--json"],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        cli = n / (time.perf_counter() - began)
    return in_process, cli


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=100_000)
    args = parser.parse_args()
    n = args.events
    print(f"engine, 1 automation, 10% hits:      {engine_rate(1, n):>10,.0f} events/s")
    print(f"engine, 100 automations, 10% hits:   {engine_rate(100, n):>10,.0f} events/s")
    rate, per_bucket = for_each_rate(100_000)
    print(f"for_each over 100k keys (all hit):   {rate:>10,.0f} events/s")
    print(f"bytes per open bucket:               {per_bucket:>10,.0f} B")
    rate, per_key = held_rate(100_000)
    print(f"held expect events, 100k keys:       {rate:>10,.0f} events/s")
    print(f"bytes per key holding one event:     {per_key:>10,.0f} B")
    in_process, cli = replay_rate(n, 100)
    print(f"replay end to end (in process):      {in_process:>10,.0f} events/s")
    print(f"replay end to end (marmot CLI):      {cli:>10,.0f} events/s")
    speed = scenario_replay(n)
    if speed is not None:
        rate, cpu, cli_rate, cli_cpu = speed
        print(
            f"speed scenario (after imports):      {rate:>10,.0f} events/s, {cpu:.2f} µs CPU/event"
        )
        print(
            f"speed scenario (marmot CLI):         {cli_rate:>10,.0f} events/s, "
            f"{cli_cpu:.2f} µs CPU/event"
        )


if __name__ == "__main__":
    main()
