"""proofs of origin and authority; join requests side by side

Events gain the origin's signature (`proof`); peers gain their own signed statement
(`proof`) and the accepting member's signed admission (`admission`); join requests are keyed
by (domain, direction, fingerprint), so a second request claiming a domain never replaces the
first. Existing rows keep working: an agent signs its own unsigned events at start, and peers
already in the database stay members.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 20:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_COLUMNS = "domain, direction, fingerprint, agent_url, public_key, nonce, received_at, state"


def upgrade() -> None:
    with op.batch_alter_table("event", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "proof", sqlmodel.sql.sqltypes.AutoString(), nullable=False, server_default=""
            )
        )
    with op.batch_alter_table("peer", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "proof", sqlmodel.sql.sqltypes.AutoString(), nullable=False, server_default=""
            )
        )
        batch_op.add_column(sa.Column("admission", sa.Text(), nullable=False, server_default=""))
    op.create_table(
        "join_request_new",
        sa.Column("domain", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("direction", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("fingerprint", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("agent_url", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("public_key", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("nonce", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("received_at", sa.Float(), nullable=False),
        sa.Column("state", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.PrimaryKeyConstraint("domain", "direction", "fingerprint"),
    )
    op.execute(f"INSERT INTO join_request_new ({_COLUMNS}) SELECT {_COLUMNS} FROM join_request")
    op.drop_table("join_request")
    op.rename_table("join_request_new", "join_request")


def downgrade() -> None:
    op.create_table(
        "join_request_old",
        sa.Column("domain", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("direction", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("agent_url", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("public_key", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("fingerprint", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("nonce", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("received_at", sa.Float(), nullable=False),
        sa.Column("state", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.PrimaryKeyConstraint("domain", "direction"),
    )
    # one request per (domain, direction) again: the newest of each
    op.execute(
        f"INSERT INTO join_request_old ({_COLUMNS}) SELECT {_COLUMNS} FROM join_request j "
        "WHERE received_at = (SELECT MAX(received_at) FROM join_request k "
        "WHERE k.domain = j.domain AND k.direction = j.direction)"
    )
    op.drop_table("join_request")
    op.rename_table("join_request_old", "join_request")
    with op.batch_alter_table("peer", schema=None) as batch_op:
        batch_op.drop_column("admission")
        batch_op.drop_column("proof")
    with op.batch_alter_table("event", schema=None) as batch_op:
        batch_op.drop_column("proof")
