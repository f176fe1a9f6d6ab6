"""a joiner's snapshot arrives in pages

The master's snapshot is downloaded a page at a time into `incoming_pool` and installed from
there in one transaction, so that memory stays flat whatever the catalogue's size and a killed
download resumes at its next page. Nothing existing changes.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06 21:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "incoming_pool",
        sa.Column("sku", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("base", sa.Integer(), nullable=True),
        sa.Column("base_created", sa.Float(), nullable=True),
        sa.Column("base_origin", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("deltas", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("sku"),
    )


def downgrade() -> None:
    op.drop_table("incoming_pool")
