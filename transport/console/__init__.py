"""The web console: server-rendered pages under ``/ui/`` of the daemon's HTTP
server, over the same in-process API as RPC (``app.console_routes``)."""

from marmot.transport.console.app import console_routes, is_loopback_host
from marmot.transport.console.context import Console
from marmot.transport.console.lookups import OrchestratorNames

__all__ = ["Console", "OrchestratorNames", "console_routes", "is_loopback_host"]
