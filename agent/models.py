"""SQLModel tables: identity, items, pools, events, version vector, pending writes, sync log."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, Text, text
from sqlmodel import Field, SQLModel

__all__ = [
    "EventRow",
    "Identity",
    "IncomingPool",
    "ItemRow",
    "JoinRequest",
    "ListedItem",
    "LogEntry",
    "PeerRow",
    "PendingWrite",
    "PoolRow",
    "StateEntry",
    "VectorEntry",
]


class Identity(SQLModel, table=True):
    """This agent: its shop domain, its epoch (made when the database was created), its key."""

    __tablename__ = "identity"
    id: int = Field(default=1, primary_key=True)
    domain: str
    epoch: str
    public_key: str
    created_at: float


class ItemRow(SQLModel, table=True):
    """One item of this agent's shop: platform id ↔ SKU, and the count last seen or written.

    `excluded` is None for a synced item, else why it is not synced ("duplicate", "no_sku").
    `published` is None until the item's count is first known. `cutover_pending` is True after
    a join until the first successful write of the group's count (DESIGN §8): until then the
    shop's count is its old stock, and changes to it are not the group's events.
    """

    __tablename__ = "item"
    # the import's count of the items still waiting for their cut-over write reads this, not
    # the whole table (it asks every 0.2 s while the import writes)
    __table_args__ = (
        Index(
            "ix_item_cutover",
            "item_id",
            sqlite_where=text("cutover_pending IS 1"),
            postgresql_where=text("cutover_pending IS true"),
        ),
    )
    item_id: str = Field(primary_key=True)
    sku: str | None = Field(default=None, index=True)
    title: str = ""
    published: int | None = None
    created_at: float = 0.0
    excluded: str | None = None
    cutover_pending: bool = False
    updated_at: float = 0.0


class PoolRow(SQLModel, table=True):
    """The group's count of one SKU: base (from the first-created introduce) + sum of deltas.

    `folded` is the part of `deltas` whose events this agent no longer holds (compacted, or
    counted in a snapshot it took): `deltas` is always `folded` plus its held events' deltas.
    """

    __tablename__ = "pool"
    # the alerts' look at the low and oversold pools reads this, not the whole table
    __table_args__ = (
        Index(
            "ix_pool_count",
            text("(base + deltas)"),
            sqlite_where=text("base IS NOT NULL"),
            postgresql_where=text("base IS NOT NULL"),
        ),
    )
    sku: str = Field(primary_key=True)
    base: int | None = None
    base_created: float | None = None
    base_origin: str | None = None
    deltas: int = 0
    updated_at: float = 0.0
    folded: int = Field(
        default=0, sa_column=Column(BigInteger, nullable=False, default=0, server_default="0")
    )

    @property
    def value(self) -> int | None:
        """The pool count, or None while no introduce has been seen."""
        return None if self.base is None else self.base + self.deltas


class ListedItem(SQLModel, table=True):
    """An item of the shop's listing during a full catalogue pass: the pass stages the listing
    here a page at a time and syncs the item table from it, so that no pass holds the whole
    catalogue in memory (`agent.catalogue.stage_listing`). Emptied when the pass ends."""

    __tablename__ = "listing"
    item_id: str = Field(primary_key=True)
    sku: str | None = None  # as the agent keys it (`SkuRule`)
    title: str = ""
    available: int = 0
    stamp: float | None = None
    created_at: float = 0.0


class IncomingPool(SQLModel, table=True):
    """A pool of the master's snapshot, received during a join and not yet installed.

    A joiner downloads the snapshot a page at a time into this table (each page committed
    with the download's progress, so a killed download resumes at the next page), then
    installs it as its base in one transaction that empties the table (DESIGN §8).
    """

    __tablename__ = "incoming_pool"
    sku: str = Field(primary_key=True)
    base: int | None = None
    base_created: float | None = None
    base_origin: str | None = None
    deltas: int = 0


class EventRow(SQLModel, table=True):
    """One stock change, identified by (origin, epoch, seq); `delta` for changes, `count` for
    an introduce (the SKU's count where it was created, at `item_created`). `proof` is the
    origin's Ed25519 signature over the event (`agent.trust.event_message`), kept and
    forwarded with it so that any member can pass it on and none can forge it."""

    __tablename__ = "event"
    origin: str = Field(primary_key=True)
    epoch: str = Field(primary_key=True)
    seq: int = Field(primary_key=True, sa_type=BigInteger)
    sku: str = Field(index=True)
    kind: str
    delta: int = 0
    count: int | None = None
    item_created: float | None = None
    cause: str = ""
    at: float = 0.0
    proof: str = ""


class VectorEntry(SQLModel, table=True):
    """Per (origin, epoch), the highest seq held without gaps, and the highest whose events
    this agent no longer keeps (`folded`: compacted, or counted in a snapshot it took), which
    it cannot send to a peer that lacks them.

    Keyed by epoch as well as origin, so that events of an origin's earlier epoch (before its
    database was wiped and restored) are still pulled and applied exactly once.
    """

    __tablename__ = "vector"
    origin: str = Field(primary_key=True)
    epoch: str = Field(primary_key=True)
    seq: int = Field(default=0, sa_type=BigInteger)
    folded: int = Field(
        default=0, sa_column=Column(BigInteger, nullable=False, default=0, server_default="0")
    )


class PendingWrite(SQLModel, table=True):
    """A write batch sent (or about to be) whose outcome is not yet known for every row.

    Kept until resolved, so that after a crash the same batch is re-sent with the same
    idempotency key and the platform applies it at most once.
    """

    __tablename__ = "pending_write"
    key: str = Field(primary_key=True)
    writes: str = Field(sa_column=Column(Text, nullable=False))  # JSON [[item_id, exp, target]]
    created_at: float = 0.0
    attempts: int = 0


class LogEntry(SQLModel, table=True):
    """The sync log, for admins: what happened when, to which SKU, from which peer."""

    __tablename__ = "sync_log"
    __table_args__ = (Index("ix_sync_log_sku_id", "sku", "id"),)
    id: int | None = Field(default=None, primary_key=True)
    at: float = Field(index=True)
    kind: str = Field(index=True)
    sku: str | None = None
    peer: str | None = None
    before: int | None = None
    delta: int | None = None
    after: int | None = None
    message: str = ""


class PeerRow(SQLModel, table=True):
    """Another member of the group, and how replication with it stands.

    `state`: "active", "paused" (it paused sync), "left" (it left the group). `acked` is the
    JSON version vector it last answered with, used to count the events it lacks.
    `proof` is the member's own signature over its statement (URL, key, state, changed_at);
    `admission` the JSON of the accepting member's signed admission (`agent.membership`).
    Either may be empty for a member taken from a trusted list (the master's welcome).
    """

    __tablename__ = "peer"
    domain: str = Field(primary_key=True)
    agent_url: str
    public_key: str
    fingerprint: str = Field(index=True)
    state: str = "active"
    changed_at: float = 0.0
    joined_at: float = 0.0
    last_contact: float | None = None
    last_error: str = ""
    acked: str = Field(default="[]", sa_column=Column(Text, nullable=False, default="[]"))
    proof: str = ""
    admission: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))


class JoinRequest(SQLModel, table=True):
    """A join request: received (`incoming`, pending until the owner accepts or rejects) or
    sent (`outgoing`, remembered so that the master's welcome can be checked).

    Keyed by the requesting key as well as the domain: two requests claiming one domain are
    kept side by side, never one in place of the other, and the owner accepts by fingerprint.
    """

    __tablename__ = "join_request"
    domain: str = Field(primary_key=True)
    direction: str = Field(primary_key=True)  # "incoming" | "outgoing"
    fingerprint: str = Field(primary_key=True)
    agent_url: str
    public_key: str
    nonce: str
    received_at: float
    state: str = "pending"  # pending | accepted | rejected | expired


class StateEntry(SQLModel, table=True):
    """Small pieces of agent state that must survive a restart (paused, maintenance, import)."""

    __tablename__ = "agent_state"
    key: str = Field(primary_key=True)
    value: str = Field(sa_column=Column(Text, nullable=False))
