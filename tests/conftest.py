"""Shared test fixtures: where the shared conformance scenarios live."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

REPO = Path(__file__).resolve().parent.parent


def conformance_dir() -> Path:
    """The shared scenarios: ``$MARMOT_CONFORMANCE_DIR`` or ``../shared/conformance``."""
    configured = os.environ.get("MARMOT_CONFORMANCE_DIR")
    return Path(configured) if configured else REPO.parent / "shared" / "conformance"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository's top folder."""
    return REPO


# CI runs the property tests on a fixed set of examples, so a landing never
# depends on luck; locally they keep exploring new ones (and remember failures).
settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    settings.load_profile("ci")
