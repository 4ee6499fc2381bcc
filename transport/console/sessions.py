"""The console's browser sessions: who is logged in, and each session's CSRF token.

A session is a random id in an HttpOnly, SameSite=Strict cookie, known only to
this daemon's memory (a restart logs everyone out). Every session has its
own CSRF token, which each form and script sends back with a change; a POST
without it is refused. On loopback a session is logged in from the start;
bound beyond loopback it logs in with the console token.
"""

from __future__ import annotations

import hmac
import secrets
from collections import OrderedDict
from dataclasses import dataclass, field

from marmot.actors.clock import SYSTEM_CLOCK
from marmot.engine.clock import Clock

__all__ = ["COOKIE", "CSRF_FIELD", "CSRF_HEADER", "Session", "Sessions"]

COOKIE = "marmot_console"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
# Sessions kept at once; past it the one used longest ago is forgotten.
_MAX_SESSIONS = 1000
# A session unused this long is forgotten (its cookie no longer logs in).
_IDLE_S = 12 * 3600.0


@dataclass(slots=True)
class Session:
    """One browser's session."""

    id: str
    csrf: str
    is_logged_in: bool
    last_used: float = field(default=0.0)

    def has_csrf(self, given: str | None) -> bool:
        """Whether ``given`` is this session's CSRF token (compared in constant time)."""
        return given is not None and hmac.compare_digest(given.encode(), self.csrf.encode())


class Sessions:
    """The sessions of one console: made, found, logged in and out."""

    def __init__(self, token: str | None, *, clock: Clock = SYSTEM_CLOCK) -> None:
        """``token``: what a login must give; None means no login (loopback)."""
        self._token = token
        self._clock = clock
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    @property
    def needs_login(self) -> bool:
        """Whether sessions start logged out."""
        return self._token is not None

    def find_or_start(self, session_id: str | None) -> tuple[Session, bool]:
        """The session of a cookie, or a new one; True when it is new (set its cookie)."""
        now = self._clock.monotonic()
        session = self._sessions.get(session_id or "")
        if session is not None and now - session.last_used <= _IDLE_S:
            session.last_used = now
            self._sessions.move_to_end(session.id)
            return session, False
        if session is not None:
            del self._sessions[session.id]
        session = Session(
            id=secrets.token_urlsafe(32),
            csrf=secrets.token_urlsafe(32),
            is_logged_in=self._token is None,
            last_used=now,
        )
        self._sessions[session.id] = session
        while len(self._sessions) > _MAX_SESSIONS:
            self._sessions.popitem(last=False)
        return session, True

    def log_in(self, session: Session, token: str) -> Session | None:
        """A new, logged-in session in place of ``session`` if ``token`` is right
        (a new id, so a cookie planted before the login is worth nothing), else None."""
        if self._token is None:
            return session
        if not hmac.compare_digest(token.encode(), self._token.encode()):
            return None
        self._sessions.pop(session.id, None)
        fresh, _ = self.find_or_start(None)
        fresh.is_logged_in = True
        return fresh

    def log_out(self, session: Session) -> None:
        """Forget ``session``."""
        self._sessions.pop(session.id, None)
