"""Where the Prefect event bridge resumes: the newest ``occurred`` it has logged.

Kept in the data folder (``prefect-bridge.json``) for the server it belongs to,
so a restarted daemon asks the server for what happened while it was down. It
is written at most once a second (and when the bridge stops); what a crash
loses of it is far less than the bridge's overlap, which asks again anyway.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

__all__ = ["CURSOR_FILE", "BridgeCursor"]

log = logging.getLogger(__name__)

CURSOR_FILE = "prefect-bridge.json"


@dataclass
class BridgeCursor:
    """The newest ``occurred`` logged from one server, and the file that keeps it."""

    path: Path
    api_url: str
    newest: datetime | None = None
    _saved: datetime | None = None

    @classmethod
    def load(cls, data_dir: Path, api_url: str) -> BridgeCursor:
        """The cursor kept in ``data_dir`` for ``api_url``; empty when there is none, it
        belongs to another server, or it cannot be read (said in the log)."""
        cursor = cls(data_dir / CURSOR_FILE, api_url)
        try:
            data = json.loads(cursor.path.read_text(encoding="utf-8"))
            if data.get("api_url") == api_url and data.get("newest_occurred"):
                cursor.newest = cursor._saved = datetime.fromisoformat(data["newest_occurred"])
        except FileNotFoundError:
            pass
        except (OSError, ValueError, AttributeError) as exc:
            log.warning(
                "the Prefect bridge's resume point cannot be read (%s); resuming from now",
                exc,
                extra={"path": str(cursor.path)},
            )
        return cursor

    def advance(self, occurred: datetime) -> None:
        """Move the cursor to ``occurred`` if that is newer."""
        if self.newest is None or occurred > self.newest:
            self.newest = occurred

    @property
    def is_dirty(self) -> bool:
        """Whether the cursor moved since it was last saved."""
        return self.newest != self._saved

    def save(self) -> None:
        """Write the cursor (atomically, synced) if it moved. Raises ``OSError``."""
        newest = self.newest
        if newest is None or newest == self._saved:
            return
        text = json.dumps({"api_url": self.api_url, "newest_occurred": newest.isoformat()})
        partial = self.path.with_suffix(".json.partial")
        with partial.open("w", encoding="utf-8") as sink:
            sink.write(text)
            sink.flush()
            os.fsync(sink.fileno())
        os.replace(partial, self.path)
        self._saved = newest
