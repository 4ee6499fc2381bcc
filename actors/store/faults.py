"""What the store's failures mean: SQLite and OS errors read as a full disk, a
read-only or failing folder, or a data folder deleted under the daemon.

``storage_failure`` turns an error into the ``StorageFailed`` it stands for,
naming the folder; ``FolderIdentity`` remembers which folder and file the
database was opened in (device and inode), so a folder deleted or replaced
while the daemon runs is noticed: SQLite goes on writing to the deleted
file, and every write would be acknowledged and lost.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from marmot.engine.errors import StorageFailed, StorageFull, StorageLost

__all__ = ["FolderIdentity", "is_full", "storage_failure"]

# Below this many free bytes a disk I/O error is taken for a full disk: SQLite
# reports a failed write to its shared-memory index (SQLITE_IOERR_SHMSIZE) or
# journal as an I/O error, not as SQLITE_FULL.
FULL_BELOW_BYTES = 1024 * 1024

_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
_READ_ONLY_ERRNOS = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})


def is_full(folder: Path) -> bool:
    """Whether the disk under ``folder`` has (almost) no space left for this user."""
    try:
        stat = os.statvfs(folder)
    except OSError:
        return False
    return stat.f_bavail * stat.f_frsize < FULL_BELOW_BYTES


def _read_only_because(folder: Path) -> str | None:
    """Why ``folder`` cannot be written (a read-only file system, permissions), or None."""
    try:
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            return "read-only file system"
    except OSError:
        return None
    return None if os.access(folder, os.W_OK) else "permission denied"


def full(folder: Path) -> StorageFull:
    """The error of a write refused for want of space under ``folder``."""
    return StorageFull(
        f"the disk under the data folder {folder} is full: nothing was stored; "
        "retry once space is freed",
        details={"folder": str(folder)},
    )


def read_only(folder: Path, why: str) -> StorageFailed:
    """The error of a data folder the daemon may not write."""
    return StorageFailed(
        f"the data folder {folder} is read-only ({why}): the daemon must write there",
        details={"folder": str(folder)},
    )


def storage_failure(exc: BaseException, folder: Path) -> StorageFailed | None:
    """The storage failure ``exc`` (an SQLite or OS error) stands for, or None when it
    is not one (a constraint, a busy database, a bug)."""
    if isinstance(exc, StorageFailed):
        return exc
    if isinstance(exc, OSError):
        if exc.errno in _FULL_ERRNOS:
            return full(folder)
        if exc.errno in _READ_ONLY_ERRNOS:
            return read_only(folder, exc.strerror or str(exc))
        return StorageFailed(
            f"cannot use the data folder {folder}: {exc.strerror or exc}",
            details={"folder": str(folder)},
        )
    if not isinstance(exc, sqlite3.Error):
        return None
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None:
        return None
    primary = code & 0xFF
    if primary == sqlite3.SQLITE_FULL or (primary == sqlite3.SQLITE_IOERR and is_full(folder)):
        return full(folder)
    if primary == sqlite3.SQLITE_READONLY:
        return read_only(folder, str(exc))
    if primary in (sqlite3.SQLITE_IOERR, sqlite3.SQLITE_CANTOPEN):
        why = _read_only_because(folder)
        if why is not None:
            return read_only(folder, why)
        return StorageFailed(
            f"cannot write the data folder {folder}: {exc}", details={"folder": str(folder)}
        )
    return None


@dataclass(frozen=True, slots=True)
class FolderIdentity:
    """The device and inode of the data folder and of the database file in it."""

    folder: Path
    file: Path
    folder_id: tuple[int, int]
    file_id: tuple[int, int]

    @classmethod
    def of(cls, file: Path) -> FolderIdentity:
        """The identity of ``file`` and its folder now (raises ``OSError`` if missing)."""
        folder_stat, file_stat = os.stat(file.parent), os.stat(file)
        return cls(
            file.parent,
            file,
            (folder_stat.st_dev, folder_stat.st_ino),
            (file_stat.st_dev, file_stat.st_ino),
        )

    def check(self) -> None:
        """Raise ``StorageLost`` unless the folder and the file are the ones recorded
        (two ``stat`` calls: cheap enough for every transaction)."""
        try:
            folder_stat = os.stat(self.folder)
            file_stat = os.stat(self.file)
        except FileNotFoundError:
            raise self._lost("was deleted") from None
        except OSError as exc:
            raise self._lost(f"cannot be read ({exc.strerror or exc})") from None
        if (folder_stat.st_dev, folder_stat.st_ino) != self.folder_id or (
            file_stat.st_dev,
            file_stat.st_ino,
        ) != self.file_id:
            raise self._lost("was replaced")

    def _lost(self, what: str) -> StorageLost:
        return StorageLost(
            f"the data folder {self.folder} (its database {self.file.name}) {what} while "
            "the daemon ran: it stopped serving; restart it",
            details={"folder": str(self.folder)},
        )
