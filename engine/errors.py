"""Marmot's exception hierarchy: one root, a family per kind of failure.

Every error carries a stable ``code`` (used on the RPC wire), a human
``message`` and optional structured ``details`` (for validation errors, the
field paths pydantic reported).
"""

from __future__ import annotations

from typing import Any, ClassVar


class MarmotError(Exception):
    """Root of every error Marmot raises on purpose."""

    code: ClassVar[str] = "error"
    # Whether the same request may succeed when sent again, unchanged, later.
    is_retryable: ClassVar[bool] = False

    def __init__(self, message: str, *, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def __str__(self) -> str:
        return self.message

    def to_wire(self) -> dict[str, Any]:
        """The error as the RPC layer sends it: ``{code, message, details}``."""
        return {"code": self.code, "message": self.message, "details": self.details}


class ValidationFailed(MarmotError):
    """Raised when an event, automation, request or file does not validate."""

    code = "validation_failed"

    @classmethod
    def from_details(cls, details: list[dict[str, Any]]) -> ValidationFailed:
        """``N validation errors: first.loc: first message``, with every problem
        (``loc``, ``msg``, ``type``) as details."""
        first = details[0] if details else {"loc": [], "msg": "invalid"}
        where = ".".join(str(p) for p in first["loc"]) or "params"
        noun = "error" if len(details) == 1 else "errors"
        return cls(f"{len(details)} validation {noun}: {where}: {first['msg']}", details=details)


class NotFound(MarmotError):
    """Raised when the named automation, block or resource does not exist."""

    code = "not_found"


class Conflict(MarmotError):
    """Raised when a create or update clashes with what already exists."""

    code = "conflict"


class Unauthorized(MarmotError):
    """Raised when a request carries no token or the wrong one."""

    code = "unauthorized"


class DaemonUnavailable(MarmotError):
    """Raised when the daemon cannot be reached in time."""

    code = "unavailable"
    is_retryable = True


class RayUnavailable(MarmotError):
    """Raised when the daemon cannot join the Ray cluster it was pointed at."""

    code = "ray_unavailable"


class AddressInUse(MarmotError):
    """Raised when an address the daemon must listen on is taken by another process."""

    code = "address_in_use"


class DataDirInUse(MarmotError):
    """Raised when another daemon holds the data folder (one daemon per folder)."""

    code = "data_dir_in_use"


class StorageFailed(MarmotError):
    """Raised when the data folder cannot be written (read-only, an I/O error): nothing
    was stored."""

    code = "storage_failed"


class StorageFull(StorageFailed):
    """Raised when the disk under the data folder is full: nothing was stored, and the
    same request succeeds once space is freed."""

    code = "storage_full"
    is_retryable = True


class StorageLost(StorageFailed):
    """Raised when the data folder was deleted or replaced under the running daemon,
    which stops serving rather than acknowledge what it could not keep."""

    code = "storage_lost"


class LimitExceeded(MarmotError):
    """Raised when input is larger than a configured limit allows."""

    code = "limit_exceeded"


class Unsupported(MarmotError):
    """Raised when input asks for something Marmot does not do."""

    code = "unsupported"


class InternalError(MarmotError):
    """Raised when the daemon fails for a reason of its own."""

    code = "internal"


def from_wire(error: dict[str, Any]) -> MarmotError:
    """Rebuild the typed error a server sent as ``{code, message, details}``."""
    kinds: dict[str, type[MarmotError]] = {
        cls.code: cls
        for cls in (
            ValidationFailed,
            NotFound,
            Conflict,
            Unauthorized,
            DaemonUnavailable,
            AddressInUse,
            DataDirInUse,
            StorageFailed,
            StorageFull,
            StorageLost,
            LimitExceeded,
            Unsupported,
            InternalError,
        )
    }
    cls = kinds.get(str(error.get("code")), MarmotError)
    return cls(str(error.get("message", "")), details=error.get("details"))
