"""Resource specifications: label -> pattern(s), as in Prefect's ``match`` fields."""

from __future__ import annotations

from pydantic import RootModel


class ResourceSpecification(RootModel[dict[str, str | list[str]]]):
    """Which resources a trigger looks at: every label must match one of its patterns.

    Patterns are shell-style globs; a leading ``!`` negates (SEMANTICS §2).
    """

    root: dict[str, str | list[str]] = {}

    def patterns(self) -> dict[str, list[str]]:
        """Each label with its patterns as a list."""
        return {k: [v] if isinstance(v, str) else list(v) for k, v in self.root.items()}

    def matches_every_resource(self) -> bool:
        """True when the specification places no condition at all."""
        return not self.root

    def matches_every_resource_of_kind(self, prefix: str) -> bool:
        """True when it matches every resource whose id is ``<prefix>.*``.

        Used by the run-deployment loop guard (SEMANTICS §5).
        """
        if self.matches_every_resource():
            return True
        if set(self.root) == {"prefect.resource.id"}:
            return f"{prefix}.*" in self.patterns()["prefect.resource.id"]
        return False

    def __bool__(self) -> bool:
        return bool(self.root)
