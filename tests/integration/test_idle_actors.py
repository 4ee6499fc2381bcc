"""What an embedded Ray's workers are started with (issue 22): Ray's event-loop
statistics stay on, as Ray has them; off, a firing's action ran 25-35 ms later."""

from __future__ import annotations

import os
from pathlib import Path

import ray

from marmot.actors.runtime import EVENT_STATS_ENV, RayRuntime
from marmot.config import RayConfig


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    pairs = (item.decode(errors="replace").partition("=") for item in raw if item)
    return {name: value for name, _, value in pairs}


def test_automation_actors_keep_rays_event_loop_statistics(ray_session: None) -> None:
    runtime = RayRuntime(RayConfig())
    runtime.start()  # joined: the session's embedded Ray
    actor = runtime.automation_actor("idle-env-probe")
    try:
        pid = ray.get(actor.handle.__ray_call__.remote(lambda _self: os.getpid()), timeout=60)
        assert os.environ.get(EVENT_STATS_ENV) != "0"  # not set before Ray started
        assert _environ(pid).get(EVENT_STATS_ENV) != "0"  # what the actor's process runs with
    finally:
        runtime.kill(actor)
