"""Channel journals kept in the agent's database: one `agent_state` row per note."""

from __future__ import annotations

from typing import Any

from sqlmodel import col, select

from agent.channel import Journal
from agent.db import Database
from agent.models import PendingWrite, StateEntry

__all__ = ["StateJournal"]


class StateJournal(Journal):
    """Notes of one channel under ``journal/<channel>/<key>``, each written in its own
    transaction, so a note put before a platform call is on disk before the call leaves."""

    def __init__(self, db: Database, channel: str) -> None:
        self.db = db
        self.prefix = f"journal/{channel}/"
        # the notes that exist, once `drop_orphans` has looked (None: not known, so a delete
        # goes to the database): a channel that never notes anything (Shopify, whose writes
        # carry idempotency keys) then settles each batch without a transaction
        self._held: set[str] | None = None

    async def get(self, key: str) -> Any | None:
        return await self.db.get_state(self.prefix + key)

    async def put(self, key: str, value: Any) -> None:
        await self.db.set_state(self.prefix + key, value)
        if self._held is not None:
            self._held.add(key)

    async def delete(self, key: str) -> None:
        if self._held is not None and key not in self._held:
            return
        await self.db.delete_state(self.prefix + key)
        if self._held is not None:
            self._held.discard(key)

    async def drop_orphans(self) -> int:
        """Forget notes of batches the core no longer means to send (an agent that stopped
        between recording a batch's outcomes and dropping its note leaves one); returns how
        many. Run at start, before the core resumes its pending writes."""
        async with self.db.transaction() as session:
            pending = set(await session.exec(select(PendingWrite.key)))
            rows = await session.exec(
                select(StateEntry).where(col(StateEntry.key).startswith(self.prefix))
            )
            notes = {row.key[len(self.prefix) :]: row for row in rows}
            orphans = [row for key, row in notes.items() if key not in pending]
            for row in orphans:
                await session.delete(row)
        self._held = {key for key in notes if key in pending}
        return len(orphans)
