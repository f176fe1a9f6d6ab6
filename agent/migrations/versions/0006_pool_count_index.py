"""an index on each pool's count, for the alerts' look at the low and oversold pools

The alerts look for every pool at or below the highest low-stock threshold every few seconds.
Without an index that read walked the whole pool table (about 12 % of a core at a million
SKUs, with nothing changing); with this expression index it reads only the pools it reports.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 03:40:00
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE INDEX ix_pool_count ON pool ((base + deltas)) WHERE base IS NOT NULL")


def downgrade() -> None:
    op.execute("DROP INDEX ix_pool_count")
