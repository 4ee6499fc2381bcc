"""What idling costs on this host: work after a quiet spell (not a test).

    .venv/bin/python bench/idle.py

The latency rows of ``bench/speed.py`` (an action at 1 event/s, or at 2,000
events/s with one in ten firing) measure mostly this: how much slower a
process runs right after it slept. On some virtual machines (nested
virtualization with shadow page tables, as on the 2-core machine the
README's figures come from) a process that idled re-fills its address
translations page by page when it wakes, and the same few microseconds of
work then take milliseconds. An event's path crosses four processes (the
daemon, an automation actor, an executor, the receiver), each woken from
sleep when events are sparse.

Prints, for one event decoded (``decode_frame``) and for one Ray actor
call, the median time when busy and after the process slept 1 ms, 100 ms
and 1 s. On a host without the effect the figures stay close together.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from uuid import uuid4

import msgpack

from marmot.transport.codec import decode_frame

GAPS_S = (0.001, 0.1, 1.0)


def _median_us(step: Callable[[], object], gap_s: float, times: int) -> float:
    samples = []
    for _ in range(times):
        if gap_s:
            time.sleep(gap_s)
        began = time.perf_counter()
        step()
        samples.append((time.perf_counter() - began) * 1e6)
    return statistics.median(samples)


def _profile(step: Callable[[], object]) -> list[tuple[str, float]]:
    """(label, median µs): busy (back to back), then after each gap."""
    for _ in range(200):
        step()  # warm
    rows = [("busy", _median_us(step, 0, 2000))]
    rows += [(f"after {gap * 1000:g} ms idle", _median_us(step, gap, 7)) for gap in GAPS_S]
    return rows


def decode_profile() -> list[tuple[str, float]]:
    """One Prefect-shaped event decoded and validated, as ingest does."""
    frame = msgpack.packb(
        {
            "id": str(uuid4()),
            "occurred": datetime.now(UTC).isoformat(),
            "event": "bench.idle",
            "resource": {"prefect.resource.id": "bench.idle"},
        }
    )
    return _profile(lambda: decode_frame(frame, received=datetime.now(UTC)))


def ray_call_profile() -> list[tuple[str, float]]:
    """One call to a Ray actor and its reply (Ray must be initialised)."""
    import ray

    @ray.remote(num_cpus=0)
    class Echo:
        def echo(self, value: bytes) -> bytes:
            return value

    echo = Echo.remote()  # type: ignore[attr-defined]
    try:
        return _profile(lambda: ray.get(echo.echo.remote(b"x" * 100)))
    finally:
        ray.kill(echo)


def render(rows: list[tuple[str, float]]) -> str:
    """``busy 6 µs, after 1 ms idle 14 µs, ...``."""
    return ", ".join(f"{label} {us:,.0f} µs" for label, us in rows)


def main() -> None:
    print(f"one event decoded: {render(decode_profile())}", flush=True)
    import ray

    ray.init(include_dashboard=False, logging_level="ERROR")
    try:
        print(f"one Ray actor call: {render(ray_call_profile())}", flush=True)
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
