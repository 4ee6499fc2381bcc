"""An httpx transport over aiohttp's connection pool: the executors' outgoing HTTP.

The action runners speak httpx (``transport/notify.py``,
``transport/custom_webhook.py``), but httpx's own pool (httpcore over anyio)
spent ~1.4 ms of CPU per request at 64 concurrent webhook calls on a loaded
2-core machine, and a call-webhook action ~3 ms in all: an executor topped
out near 150 actions/s. This transport keeps httpx's client (its request
building, headers, proxies from the environment, redirect policy)
and hands each request to one ``aiohttp`` session: ~0.4 ms per request
measured the same way.

Errors come back as the httpx exceptions the runners already sort into
transient and permanent failures: connect errors as ``ConnectError``,
time-outs as ``ConnectTimeout`` / ``ReadTimeout``, a peer that hangs up as
``RemoteProtocolError``, a scheme other than http(s) as
``UnsupportedProtocol``.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from http.cookiejar import CookieJar, DefaultCookiePolicy

import aiohttp
import certifi
import httpx

__all__ = ["PooledTransport", "action_client"]

# As httpx's own pool: this many connections in all, kept open this long idle.
MAX_CONNECTIONS = 100
KEEPALIVE_S = 5.0


def _timeout(extensions: Mapping[str, object]) -> aiohttp.ClientTimeout:
    """The request's httpx time-outs (connect, read...) as aiohttp's."""
    limits = extensions.get("timeout")
    if not isinstance(limits, Mapping):
        return aiohttp.ClientTimeout()

    def seconds(name: str) -> float | None:
        value = limits.get(name)
        return float(value) if isinstance(value, int | float) else None

    return aiohttp.ClientTimeout(
        total=None, sock_connect=seconds("connect"), sock_read=seconds("read")
    )


def action_client(timeout_s: float) -> httpx.AsyncClient:
    """The client an executor's actions share: pooled connections, no redirects
    followed, and no cookies kept. Prefect's blocks call each webhook with a
    client of its own, so a cookie one server sets never reaches another call;
    a shared client keeping cookies would send one block's session cookie with
    every later call to that host, from any block or automation."""
    return httpx.AsyncClient(
        timeout=timeout_s,
        follow_redirects=False,
        transport=PooledTransport(),
        # No domain allowed: every cookie a server sets is refused.
        cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
    )


class PooledTransport(httpx.AsyncBaseTransport):
    """Sends httpx requests through one aiohttp session (opened on first use, in
    the event loop that uses it); bodies are read whole."""

    def __init__(self, *, verify: bool = True) -> None:
        self._verify = verify
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            context: ssl.SSLContext | bool = (
                ssl.create_default_context(cafile=certifi.where()) if self._verify else False
            )
            connector = aiohttp.TCPConnector(
                limit=MAX_CONNECTIONS, keepalive_timeout=KEEPALIVE_S, ssl=context
            )
            # httpx decides on cookies and decodes the body: aiohttp passes both through.
            self._session = aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
            )
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send one request; the response comes back read."""
        if request.url.scheme not in ("http", "https"):
            raise httpx.UnsupportedProtocol(
                f"Request URL has an unsupported protocol '{request.url.scheme}://'.",
                request=request,
            )
        body = await request.aread()
        # httpx sets Host and Content-Length itself; aiohttp sets its own.
        headers = [
            (name, value)
            for name, value in request.headers.multi_items()
            if name.lower() not in ("host", "content-length", "transfer-encoding")
        ]
        try:
            async with self._open().request(
                request.method,
                str(request.url),
                headers=headers,
                data=body or None,
                allow_redirects=False,
                timeout=_timeout(request.extensions),
            ) as reply:
                content = await reply.read()
                status, raw_headers = reply.status, list(reply.raw_headers)
        except aiohttp.ConnectionTimeoutError as exc:
            raise httpx.ConnectTimeout(str(exc) or "connect timed out", request=request) from exc
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise httpx.ReadTimeout(str(exc) or "read timed out", request=request) from exc
        except aiohttp.ClientConnectorError as exc:
            raise httpx.ConnectError(str(exc), request=request) from exc
        except aiohttp.InvalidURL as exc:
            raise httpx.InvalidURL(f"invalid URL: {exc}") from exc
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError) as exc:
            raise httpx.RemoteProtocolError(str(exc), request=request) from exc
        except aiohttp.ClientError as exc:
            raise httpx.NetworkError(str(exc) or type(exc).__name__, request=request) from exc
        return httpx.Response(
            status,
            headers=[
                (name.decode("latin-1"), value.decode("latin-1")) for name, value in raw_headers
            ],
            stream=httpx.ByteStream(content),
            request=request,
        )

    async def aclose(self) -> None:
        """Close the pooled connections."""
        if self._session is not None:
            await self._session.close()
            self._session = None
