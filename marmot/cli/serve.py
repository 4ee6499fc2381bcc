"""``marmot serve``: run the daemon until interrupted.

A start that fails for a reason of the machine (the data folder held by
another daemon, read-only or on a full disk, an address in use) ends with one
line naming it, and for a setting, the flag, variable and key that set it;
exit code 1 (``marmot.cli.main`` prints a ``MarmotError``).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from typing import Any

from marmot.config import environment_names, load_config
from marmot.engine.errors import AddressInUse, DataDirInUse

# The configuration key each flag sets (``--data-dir`` sets ``data.dir``).
FLAGS = {
    "data.dir": "--data-dir",
    "rpc.url": "--rpc-url",
    "ingest.pull_url": "--ingest-url",
    "http.port": "--http-port",
    "ray.address": "--ray-address",
    "prefect.api_url": "--prefect-api-url",
}


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
    serve.add_argument(
        "--prefect-api-url",
        help="bridge events from this Prefect server's API, e.g. http://127.0.0.1:4200/api "
        "(config prefect.api_url)",
    )
    serve.set_defaults(handler=run_serve)


def how_to_set(key: str) -> str:
    """Where the configuration ``key`` is set: ``--rpc-url, MARMOT_RPC_URL or rpc.url
    in the config``."""
    variables = [name for name, k in environment_names().items() if k == key]
    ways = [FLAGS[key]] if key in FLAGS else []
    ways += variables[:1]
    return ", ".join(ways) + (" or " if ways else "") + f"{key} in the config"


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
            "prefect.api_url": args.prefect_api_url,
        }.items()
        if value is not None
    }
    config = load_config(args.config, overrides=overrides)
    logging.basicConfig(
        level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    from marmot.transport.daemon import Daemon

    try:
        asyncio.run(Daemon(config).run_until_signalled())
    except AddressInUse as exc:
        key = str((exc.details or {}).get("key", ""))
        raise AddressInUse(f"{exc} (set it with {how_to_set(key)})", details=exc.details) from None
    except DataDirInUse as exc:
        raise DataDirInUse(
            f"{exc} (set it with {how_to_set('data.dir')})", details=exc.details
        ) from None
    return 0
