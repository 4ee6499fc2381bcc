"""A daemon of a fuzz module's own (the session one lives in tests/integration)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

from marmot.actors.runtime import RayRuntime
from marmot.config import RayConfig
from tests.integration.harness import DaemonThread, make_config


@contextlib.contextmanager
def own_daemon(folder: Path, label: str) -> Iterator[DaemonThread]:
    """Run a daemon on ``folder`` for the duration of the block.

    It joins the session's Ray when one is up (in a namespace of its own, so
    its actors' names do not clash), and otherwise starts (and stops) its own.
    """
    runtime = RayRuntime(RayConfig(num_cpus=2, object_store_memory_mb=100))
    runtime.start()
    namespace = f"{label}-{uuid4().hex[:8]}"
    running = DaemonThread(make_config(folder, **{"ray.namespace": namespace})).start()
    try:
        yield running
    finally:
        running.stop()
        runtime.shutdown()
