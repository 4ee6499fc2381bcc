"""Options every client command shares: where the daemon is and how to log in."""

from __future__ import annotations

import argparse

from marmot.transport.client import Client


def client_options() -> argparse.ArgumentParser:
    """A parent parser with ``--url``, ``--token`` and ``--timeout``."""
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("connection")
    group.add_argument(
        "--url", help="daemon RPC URL (default $MARMOT_RPC_URL or tcp://127.0.0.1:7601)"
    )
    group.add_argument("--token", help="shared token (default $MARMOT_TOKEN)")
    group.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for a reply")
    return parent


def connect(args: argparse.Namespace) -> Client:
    """A client for the daemon named by the command's options."""
    return Client(args.url, token=args.token, timeout_s=args.timeout)
