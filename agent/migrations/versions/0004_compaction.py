"""history folded: what each pool and each stream no longer keeps as events

Compaction (DESIGN §7) drops events every member holds. `pool.folded` keeps the sum of a
pool's dropped deltas (so `deltas` is still `folded` plus the held events' deltas, which an
audit can check) and `vector.folded` the highest seq of each stream whose events are gone
(a peer that lacks them is told, not sent a gap). Existing rows start at 0: nothing folded.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07 00:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in ("pool", "vector"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(
                sa.Column("folded", sa.BigInteger(), nullable=False, server_default="0")
            )


def downgrade() -> None:
    for table in ("pool", "vector"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("folded")
