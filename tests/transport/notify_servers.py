"""Real servers on 127.0.0.1 for the delivery tests: an HTTP server that records
every request, and an aiosmtpd SMTP server that keeps every message."""

from __future__ import annotations

import ipaddress
import json
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session


@dataclass(frozen=True)
class Recorded:
    """One request the HTTP server received."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Reply:
    """What the HTTP server answers on a path."""

    status: int = 200
    body: str = "ok"
    headers: dict[str, str] = field(default_factory=dict)


class RecordingServer:
    """An HTTP server on 127.0.0.1 that records requests and answers per path.

    ``/hang`` never answers until the server closes (for time-out tests).
    """

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.replies: dict[str, Reply] = {}
        # Replies used once each, in order, before ``replies`` applies.
        self.scripts: dict[str, list[Reply]] = {}
        self._release = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                server.requests.append(
                    Recorded(
                        self.command,
                        self.path,
                        {k.lower(): v for k, v in self.headers.items()},
                        body,
                    )
                )
                if self.path == "/hang":
                    server._release.wait()
                    return
                script = server.scripts.get(self.path)
                reply = script.pop(0) if script else server.replies.get(self.path, Reply())
                payload = reply.body.encode()
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.02,), daemon=True)
        self._thread.start()

    def url(self, path: str) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}{path}"

    def reply(self, path: str, status: int, body: str = "", **headers: str) -> None:
        self.replies[path] = Reply(status, body, dict(headers))

    def script(self, path: str, *statuses: int) -> None:
        """Answer the next requests on ``path`` with these statuses, once each."""
        self.scripts[path] = [Reply(status, "") for status in statuses]

    def on(self, path: str) -> list[Recorded]:
        """The requests received on ``path``."""
        return [r for r in self.requests if r.path == path]

    def close(self) -> None:
        self._release.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Mailbox:
    """aiosmtpd handler: keeps messages, or refuses recipients/data with a set reply."""

    def __init__(self) -> None:
        self.messages: list[tuple[Envelope, Message]] = []
        self.rcpt_reply: str | None = None
        self.data_reply: str | None = None

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if self.rcpt_reply is not None:
            return self.rcpt_reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.data_reply is not None:
            return self.data_reply
        content = envelope.original_content or b""
        self.messages.append((envelope, message_from_bytes(content)))
        return "250 Message accepted for delivery"


def self_signed_context(directory: Path) -> ssl.SSLContext:
    """A server TLS context with a fresh self-signed certificate for 127.0.0.1."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    certfile, keyfile = directory / "cert.pem", directory / "key.pem"
    certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certfile, keyfile)
    return context


class MailServer:
    """An aiosmtpd SMTP server on 127.0.0.1 with optional AUTH LOGIN/PLAIN and TLS
    (``starttls`` offers STARTTLS, ``ssl`` speaks TLS from the first byte)."""

    def __init__(
        self,
        *,
        login: tuple[str, str] | None = None,
        tls: Literal["starttls", "ssl"] | None = None,
        context: ssl.SSLContext | None = None,
    ) -> None:
        self.mailbox = _Mailbox()
        self.logins: list[str] = []
        self.port = free_port()
        expected = login

        def authenticate(
            server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
        ) -> AuthResult:
            if not isinstance(data, LoginPassword) or expected is None:
                return AuthResult(success=False, handled=False)
            user, password = data.login.decode(), data.password.decode()
            self.logins.append(user)
            # handled=False: aiosmtpd sends the 235/535 reply itself.
            return AuthResult(success=(user, password) == expected, handled=False)

        self._controller = Controller(
            self.mailbox,
            hostname="127.0.0.1",
            port=self.port,
            authenticator=authenticate if login else None,
            auth_require_tls=False,
            tls_context=context if tls == "starttls" else None,
            ssl_context=context if tls == "ssl" else None,
        )
        self._controller.start()

    @property
    def messages(self) -> list[tuple[Envelope, Message]]:
        return self.mailbox.messages

    def close(self) -> None:
        self._controller.stop()


def serving() -> Iterator[RecordingServer]:
    """A fixture body: one recording server, closed afterwards."""
    server = RecordingServer()
    try:
        yield server
    finally:
        server.close()


def mailing(**options: Any) -> Iterator[MailServer]:
    """A fixture body: one SMTP server (``MailServer`` options), stopped afterwards."""
    server = MailServer(**options)
    try:
        yield server
    finally:
        server.close()
