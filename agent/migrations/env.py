"""Alembic environment: runs on the connection `agent.db.Database.upgrade` hands it."""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

import agent.models  # noqa: F401 - registers the tables on SQLModel.metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only via agent.db
    raise RuntimeError("run migrations through agent.db.Database.upgrade()")
context.configure(
    connection=connection,
    target_metadata=SQLModel.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
