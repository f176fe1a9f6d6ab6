"""a full catalogue pass stages the shop's listing in pages

A pass over the whole catalogue used to hold the listing, the item table and several maps of
them in memory at once (1.8 GB at a million items). It now stages the listing in `listing` a
page at a time, syncs the item table from it page by page, and empties it when it ends.
Nothing existing changes.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07 00:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "listing",
        sa.Column("item_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("sku", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("title", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("available", sa.Integer(), nullable=False),
        sa.Column("stamp", sa.Float(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("item_id"),
    )


def downgrade() -> None:
    op.drop_table("listing")
