"""The embedded Ray the daemon starts: token authentication on, and nothing printed
about it (issue 17 #18). Ray cannot be kept to loopback (it replaces a loopback
node address with the machine's own, and its gRPC servers listen on every
interface): the token is what guards it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import ray

from marmot.actors.runtime import ACTOR_MEMORY_BYTES, AUTH_MODE_ENV

pytestmark = pytest.mark.integration


def test_the_embedded_ray_keeps_token_authentication(ray_session: None) -> None:
    assert ray.is_initialized()
    # Ray turned it on for the new local cluster (the processes it started
    # inherit the mode), and keeps the token where only this user reads it.
    assert os.environ.get(AUTH_MODE_ENV) == "token"
    token = Path.home() / ".ray" / "auth_token"
    assert token.is_file() and token.stat().st_mode & 0o077 == 0


def test_starting_the_embedded_ray_prints_no_warning_about_authentication() -> None:
    """A fresh process (its own Ray) as `marmot serve` starts one: nothing on stderr
    but a line the user needs."""
    code = (
        "from marmot.actors.runtime import RayRuntime\n"
        "from marmot.config import RayConfig\n"
        "r = RayRuntime(RayConfig(num_cpus=1, object_store_memory_mb=80))\n"
        "r.start()\n"
        "r.shutdown()\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in (AUTH_MODE_ENV, "RAY_ADDRESS")}
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=180, env=env
    )
    assert run.returncode == 0, run.stderr
    assert "Token authentication" not in run.stderr + run.stdout


def test_the_capacity_estimate_uses_the_measured_unique_memory_of_an_actor() -> None:
    # bench/actor_memory.py measures it; this is the figure README and status quote.
    assert 40 * 2**20 < ACTOR_MEMORY_BYTES < 80 * 2**20
