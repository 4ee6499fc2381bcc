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
    group.add_argument(
        "--server-key",
        metavar="KEY",
        help="the daemon's CURVE public key, Z85 text or its .key file "
        "(default $MARMOT_SERVER_KEY; none: plain TCP)",
    )
    group.add_argument(
        "--client-key",
        metavar="FILE",
        help="this client's CURVE .key_secret file, for a daemon that lists its "
        "clients (default $MARMOT_CLIENT_KEY; none: a throwaway key)",
    )
    group.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for a reply")
    return parent


def connect(args: argparse.Namespace) -> Client:
    """A client for the daemon named by the command's options."""
    return Client(
        args.url,
        token=args.token,
        timeout_s=args.timeout,
        server_key=args.server_key,
        client_key=args.client_key,
    )
