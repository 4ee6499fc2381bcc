"""The base model every Marmot schema derives from."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class MarmotModel(BaseModel):
    """Strict about unknown fields, so a typo in an automation is an error, not a no-op."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
