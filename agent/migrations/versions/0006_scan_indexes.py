"""indexes for two reads that walked whole tables every few seconds

The alerts look for every pool at or below the highest low-stock threshold every few seconds.
Without an index that read walked the whole pool table (about 12 % of a core at a million
SKUs, with nothing changing); with this expression index it reads only the pools it reports.
The import counts the items still waiting for their cut-over write every 0.2 s while it
writes, and the import page once a second: a partial index holds only those items.

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
    # the predicate as SQLAlchemy writes `cutover_pending IS true` on each: SQLite uses a
    # partial index only for a query whose WHERE has the same term
    true = "1" if op.get_bind().dialect.name == "sqlite" else "true"
    op.execute(f"CREATE INDEX ix_item_cutover ON item (item_id) WHERE cutover_pending IS {true}")


def downgrade() -> None:
    op.execute("DROP INDEX ix_item_cutover")
    op.execute("DROP INDEX ix_pool_count")
