"""``marmot serve``: run the daemon until interrupted."""

from __future__ import annotations

import argparse
import asyncio
import logging
from typing import Any

from marmot.config import load_config


def register(commands: Any) -> None:
    """Add ``serve``."""
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
