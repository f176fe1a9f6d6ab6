"""The sync mode: whether this agent exchanges events with its peers, and if not, why.

One owner for what used to be three flags set from four places:

- **running**: events go out and come in;
- **paused** (the owner paused sync): nothing is sent or taken, peers are answered 503
  ``paused``; persisted as the ``paused`` state entry;
- **importing** (a join, from the welcome until the master's snapshot is this agent's base):
  nothing is sent or taken, peers are answered 503 ``importing``; the join's own progress
  record (``import``) is what survives a crash, and the join resumes into this mode;
- **maintenance** (a bulk import, or the owner): this shop's own changes are recorded but held
  back — neither pushed nor served in pulls — while the group's changes still come in;
  persisted as the ``maintenance`` state entry.

Paused and importing win over maintenance (which only holds back this shop's own stream).
Every transition is a method here; the replicator and the peer service only ask.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from agent.db import Database

__all__ = ["IMPORTING", "MAINTENANCE", "PAUSED", "RUNNING", "SyncMode"]

RUNNING, PAUSED, IMPORTING, MAINTENANCE = "running", "paused", "importing", "maintenance"
_REFUSALS = {
    PAUSED: "sync is paused at this shop; try again later",
    IMPORTING: "this shop is importing the group's counts",
}


class SyncMode:
    """The mode of one agent, persisted in its database."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.paused = False
        self.importing = False
        self.maintenance: dict[str, Any] = {"on": False}
        self._on_release: list[Callable[[], None]] = []

    async def load(self) -> None:
        """At start: the mode the agent had when it stopped (importing is resumed by the join)."""
        self.paused = bool(await self.db.get_state("paused", False))
        self.maintenance = await self.db.get_state("maintenance", {"on": False})

    def on_release(self, callback: Callable[[], None]) -> None:
        """Call `callback` whenever sync may go on after a hold (resume, import done,
        maintenance off): the replicator wakes its links."""
        self._on_release.append(callback)

    # -- what is asked -------------------------------------------------------------------------

    @property
    def name(self) -> str:
        if self.paused:
            return PAUSED
        if self.importing:
            return IMPORTING
        return MAINTENANCE if self.held_back else RUNNING

    @property
    def exchanging(self) -> bool:
        """Events are exchanged with peers at all (not paused, not importing)."""
        return not (self.paused or self.importing)

    @property
    def held_back(self) -> bool:
        """Maintenance: this shop's own changes wait until it ends."""
        return bool(self.maintenance.get("on"))

    @property
    def sending_own(self) -> bool:
        """This shop's own events go out (pushed, and served in pulls)."""
        return self.exchanging and not self.held_back

    def refusal(self) -> tuple[str, str] | None:
        """What a peer is answered (error code, message) while this agent does not exchange;
        None while it does."""
        name = self.name
        return (name, _REFUSALS[name]) if name in _REFUSALS else None

    # -- transitions ---------------------------------------------------------------------------

    async def set_paused(self, paused: bool) -> None:
        """The owner pauses or resumes sync (persisted)."""
        await self.db.set_state("paused", paused)
        self.paused = paused
        if not paused:
            self._released()

    def begin_import(self) -> None:
        """A join's snapshot is about to be taken (or its taking resumed after a crash)."""
        self.importing = True

    def end_import(self) -> None:
        """The master's snapshot is this agent's base: sync live."""
        self.importing = False
        self._released()

    async def set_maintenance(self, state: dict[str, Any]) -> None:
        """Maintenance on or off (`state["on"]`), with what the importer notes of it."""
        await self.db.set_state("maintenance", state)
        self.maintenance = dict(state)
        if not self.held_back:
            self._released()

    def _released(self) -> None:
        for callback in self._on_release:
            callback()
