"""A running daemon whose data folder is deleted, and starts that must fail with one
line: a data folder another daemon holds, read-only or on a full disk, an
address in use.

The running daemons are ``DaemonThread``s on the session Ray; the starts are
``marmot serve`` processes, which fail before they start Ray.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import httpx
import pytest

from marmot.actors.store import Store
from marmot.engine.errors import StorageLost
from marmot.transport.client import Client
from tests.disk import fill, mounted_tmpfs, remount_read_only
from tests.integration.harness import DaemonThread, event_doc, free_port, make_config, wait_for

pytestmark = pytest.mark.integration

MARMOT = Path(sys.executable).with_name("marmot")


def serve(data_dir: Path, **flags: str) -> subprocess.CompletedProcess[str]:
    """Run ``marmot serve`` on ``data_dir`` with free ports unless ``flags`` say
    otherwise; it is expected to fail before it starts Ray."""
    ports = {
        "--rpc-url": f"tcp://127.0.0.1:{free_port()}",
        "--ingest-url": f"tcp://127.0.0.1:{free_port()}",
        "--http-port": str(free_port()),
    }
    ports.update({f"--{k.replace('_', '-')}": v for k, v in flags.items()})
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MARMOT_", "RAY_ADDRESS"))}
    return subprocess.run(
        [str(MARMOT), "serve", "--data-dir", str(data_dir), *sum(ports.items(), ())],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def one_line_error(run: subprocess.CompletedProcess[str]) -> str:
    """The one line a failed start printed (exit code 1, no traceback)."""
    output = (run.stdout + run.stderr).strip()
    assert run.returncode == 1, output
    assert "Traceback" not in output, output
    lines = output.splitlines()
    assert len(lines) == 1, output
    assert lines[0].startswith("error: "), output
    return lines[0]


@pytest.fixture
def own_daemon(ray_session: None, tmp_path: Path) -> Iterator[DaemonThread]:
    config = make_config(tmp_path / "data", **{"ray.namespace": f"marmot-dd-{uuid4().hex[:8]}"})
    running = DaemonThread(config).start()
    yield running
    running.stop()


def test_a_deleted_data_folder_stops_the_daemon_serving(
    own_daemon: DaemonThread, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    healthz = f"http://127.0.0.1:{own_daemon.config.http.port}/healthz"
    with Client(own_daemon.rpc_url, timeout_s=10) as client:
        client.emit([event_doc("folder.here")])
        shutil.rmtree(tmp_path / "data")

        # Refused before it is acknowledged, whether the watch has looked yet or not.
        with pytest.raises(StorageLost, match="was deleted"):
            client.emit([event_doc("folder.gone")])
        health = wait_for(lambda: (h := client.health())["state"] == "stopped" and h, 10)
        assert health["ok"] is False
        assert health["problem"] == "storage_lost"
        assert str(tmp_path / "data") in health["reason"]
        response = httpx.get(healthz, timeout=5)
        assert response.status_code == 503 and response.json()["reason"] == health["reason"]
        with pytest.raises(StorageLost):
            client.list_automations()
        with pytest.raises(StorageLost):
            client.emit([event_doc("folder.gone")])
    assert any("stopped serving" in r.getMessage() for r in caplog.records)


def test_a_second_daemon_on_the_same_data_folder_is_refused_naming_the_first(
    own_daemon: DaemonThread, tmp_path: Path
) -> None:
    line = one_line_error(serve(tmp_path / "data"))
    assert str(tmp_path / "data") in line
    assert f"pid {os.getpid()} (" in line and "pytest" in line
    assert "--data-dir, MARMOT_DATA_DIR or data.dir" in line
    # The first one goes on serving.
    with Client(own_daemon.rpc_url, timeout_s=10) as client:
        assert client.health()["ok"] is True


@pytest.mark.parametrize(
    ("flag", "key", "variable"),
    [
        ("rpc_url", "rpc.url", "MARMOT_RPC_URL"),
        ("ingest_url", "ingest.pull_url", "MARMOT_INGEST_PULL_URL"),
        ("http_port", "http.port", "MARMOT_HTTP_PORT"),
    ],
)
def test_an_address_in_use_fails_the_start_with_one_line(
    tmp_path: Path, flag: str, key: str, variable: str
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        value = str(port) if flag == "http_port" else f"tcp://127.0.0.1:{port}"
        line = one_line_error(serve(tmp_path / "data", **{flag: value}))
    address = f"127.0.0.1:{port}" if flag == "http_port" else value
    option = "--" + flag.replace("_", "-")
    assert line == (
        f"error: {key} {address} is in use "
        f"(set it with {option}, {variable} or {key} in the config)"
    )


def test_a_read_only_data_folder_fails_the_start_with_one_line(tmp_path: Path) -> None:
    with mounted_tmpfs(tmp_path / "ro", "1m") as disk:
        Store.open(disk / "data" / "marmot.db").close()
        remount_read_only(disk)
        line = one_line_error(serve(disk / "data"))
    assert f"the data folder {disk / 'data'} is read-only" in line


def test_a_start_on_a_full_disk_fails_with_one_line(tmp_path: Path) -> None:
    with mounted_tmpfs(tmp_path / "disk", "4m") as disk:
        Store.open(disk / "data" / "marmot.db").close()
        filler = fill(disk)
        line = one_line_error(serve(disk / "data"))
        filler.unlink()
    assert f"the disk under the data folder {disk / 'data'} is full" in line
