"""``marmot serve`` and ``marmot status``."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
from typing import Any

from marmot.cli.connect import client_options, connect
from marmot.cli.output import json_lines, table
from marmot.config import load_config


def register(commands: Any) -> None:
    """Add ``serve`` and ``status``."""
    serve = commands.add_parser(
        "serve",
        help="run the daemon",
        description="Run the Marmot daemon (embedded Ray and SQLite unless configured).",
    )
    serve.add_argument("--config", help="marmot.yaml (default $MARMOT_CONFIG)")
    serve.add_argument("--data-dir", help="data folder (default from config / $MARMOT_DATA_DIR)")
    serve.add_argument("--rpc-url", help="bind RPC here (config rpc.url)")
    serve.add_argument("--ingest-url", help="bind ingest PULL here (config ingest.pull_url)")
    serve.add_argument("--http-port", type=int, help="HTTP port (config http.port)")
    serve.add_argument("--ray-address", help="join this Ray cluster (config ray.address)")
    serve.set_defaults(handler=run_serve)

    status = commands.add_parser(
        "status", parents=[client_options()], help="show the daemon's state and capacity"
    )
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(handler=run_status)


def run_serve(args: argparse.Namespace) -> int:
    """Load the config and serve until interrupted."""
    overrides = {
        key: value
        for key, value in {
            "data.dir": args.data_dir,
            "rpc.url": args.rpc_url,
            "ingest.pull_url": args.ingest_url,
            "http.port": args.http_port,
            "ray.address": args.ray_address,
        }.items()
        if value is not None
    }
    config = load_config(args.config, overrides=overrides)
    logging.basicConfig(
        level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    from marmot.transport.daemon import Daemon

    asyncio.run(Daemon(config).run_until_signalled())
    return 0


def run_status(args: argparse.Namespace) -> int:
    """Print the daemon's status."""
    with connect(args) as client:
        status = client.status()
    if args.json:
        json_lines([status])
        return 0
    capacity = status.pop("capacity", {})
    rows = [[k, json.dumps(v) if isinstance(v, dict | list) else v] for k, v in status.items()]
    rows += [[f"capacity.{k}", v] for k, v in capacity.items()]
    table("marmot status", ["key", "value"], rows)
    return 0
