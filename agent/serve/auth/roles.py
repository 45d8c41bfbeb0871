"""The two roles a caller can hold."""

from __future__ import annotations

import enum


class Role(enum.IntEnum):
    """What a caller may do; a higher role implies the lower ones."""

    VIEWER = 1  # Watch/List/GetMigration(s), EstimateMigration, EstimateEvacuation
    OPERATOR = 2  # also AbortMigration, ForceCompleteMigration, UpdateMigrationLimits

    @property
    def label(self) -> str:
        return self.name.lower()
