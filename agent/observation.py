"""The observation rule, and the unit of work that folds fresh counts into items (DESIGN §5)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Set
from typing import Any, Protocol

from sqlalchemy import Connection

from agent import ledger, synclog
from agent.causes import logged
from agent.ledger import INTRODUCE, NewEvent
from agent.models import EventRow
from agent.sql import Tx, marks
from agent.warehouses import Listings, parse_listing

__all__ = ["Append", "Effects", "Item", "load_items", "observe", "observe_counts", "save_items"]

#: Appends this agent's own events inside a unit of work (`ledger.append`, signed).
Append = Callable[[Connection, list[NewEvent], float], list[EventRow]]

_ITEMS = "SELECT item_id, sku, published, created_at, excluded, cutover_pending FROM item"
_SAVE_ITEM = "UPDATE item SET published = ?, cutover_pending = ? WHERE item_id = ?"


@dataclasses.dataclass(slots=True)
class Item:
    """What the write pipeline reads and updates of an item row (a plain value)."""

    item_id: str
    sku: str | None
    published: int | None
    created_at: float
    excluded: str | None
    cutover_pending: bool

    def state(self) -> tuple[int | None, bool]:
        return (self.published, self.cutover_pending)


class _ItemLike(Protocol):
    sku: str | None
    published: int | None
    created_at: float
    cutover_pending: bool


class _HasValue(Protocol):
    @property
    def value(self) -> int | None: ...


def load_items(conn: Connection, ids: Iterable[str]) -> dict[str, Item]:
    """The item rows of `ids` that exist, by item id."""
    tx = Tx(conn)
    out: dict[str, Item] = {}
    for chunk in ledger._chunks(ids):
        for i, sku, published, created, excluded, cutover in tx.rows(
            f"{_ITEMS} WHERE item_id IN ({marks(len(chunk))})", chunk
        ):
            out[i] = Item(i, sku, published, created, excluded, bool(cutover))
    return out


def save_items(conn: Connection, items: Iterable[Item]) -> None:
    """Write back the published count and cut-over flag of `items`, in one statement."""
    Tx(conn).many(_SAVE_ITEM, ((i.published, i.cutover_pending, i.item_id) for i in items))


@dataclasses.dataclass
class Effects:
    """What a unit of work decided for the reconciler's memory, applied after it commits (the
    unit runs in the database thread, which never touches the reconciler's state)."""

    touched: list[str] = dataclasses.field(default_factory=list)
    observed: list[str] = dataclasses.field(default_factory=list)  # counts seen, not written
    seen: dict[str, int] = dataclasses.field(default_factory=dict)
    # item_id -> (platform stamp, published count) of a touched item whose new state came with
    # the platform's stamp; a touched item not here has an unknown stamp
    known: dict[str, tuple[float, int]] = dataclasses.field(default_factory=dict)
    plan: set[str] = dataclasses.field(default_factory=set)  # SKUs to write again
    read: dict[str, str] = dataclasses.field(default_factory=dict)  # item_id -> cause
    written: list[str] = dataclasses.field(default_factory=list)  # rows settled
    events: list[EventRow] = dataclasses.field(default_factory=list)
    failed: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (sku, why)
    # item_id -> cause of a rise held back once (`observe_counts`' `held`): read again later
    held: dict[str, str] = dataclasses.field(default_factory=dict)


def observe(item: _ItemLike, obs: int, pool: _HasValue | None, cause: str) -> NewEvent | None:
    """The observation rule: what a fresh count `obs` of `item` means (updates `item`).

    First sighting of a SKU the pool does not know → `introduce` with its count; first
    sighting of a known SKU → no event (the pool's target will overwrite it); otherwise a
    non-zero difference from the published count is a local change.
    """
    assert item.sku is not None
    if item.cutover_pending:  # old stock before the join's cut-over write: not an event
        item.published = obs
        return None
    if item.published is None:
        item.published = obs
        if pool is None or pool.value is None:
            return NewEvent(
                item.sku, INTRODUCE, count=obs, item_created=item.created_at, cause=cause
            )
        return None
    delta = obs - item.published
    item.published = obs
    if delta == 0:
        return None
    return NewEvent(item.sku, "change", delta=delta, cause=cause)


def observe_counts(
    conn: Connection,
    counts: dict[str, int],
    causes: dict[str, str] | str,
    now: float,
    append: Append,
    *,
    stamps: dict[str, float | None] | None = None,
    expect: dict[str, int] | None = None,
    listings: Listings | None = None,
    held: Set[str] = frozenset(),
) -> Effects:
    """Apply fresh counts of items in one unit of work: their events, log and published
    counts; returns what the reconciler's memory must learn of it.

    `stamps`: the platform's time of each count (`Level.stamp`), kept as the item's known
    state. `expect`: counts taken from level webhooks, each valid only while the item still
    publishes the count the agent's stamped knowledge belongs to; an item that moved since
    (a path without a stamp) is read instead. `listings`: the shop's locations and the group's
    bundles: a change at a listing is its warehouses' (a bundle's, its components'),
    `Listings.expand`; without, an item's key is its pool's. A rise that would be refused
    there (stock added by hand at a location of several warehouses) is held back the first
    time (`Effects.held`: the item keeps its published count and is read again a moment
    later), since a refund's own webhook may come after its level's; an item in `held` was
    held once already, and its rise is refused now unless a refund or cancellation told of it.
    """
    done = Effects()
    rows = load_items(conn, counts)
    listed = [r.sku for r in rows.values() if r.sku]
    pools = ledger.pools(conn, listings.keys(listed) if listings else listed)

    def count_of(key: str) -> int | None:
        pool = pools.get(key)
        return None if pool is None else pool.value

    new_events: list[NewEvent] = []
    introduced: list[str] = []
    entries: list[dict[str, Any]] = []
    changed: list[Item] = []
    for item_id, obs in counts.items():
        row = rows.get(item_id)
        if row is None or row.excluded is not None or not row.sku:
            continue
        cause = causes if isinstance(causes, str) else causes.get(item_id, "read")
        if expect is not None and row.published != expect.get(item_id):
            done.read[item_id] = cause
            continue
        if (
            listings
            and row.published is not None
            and obs > row.published
            and not row.cutover_pending
            and item_id not in held
            and listings.refuses(row.sku, obs - row.published, cause)
        ):
            done.held[item_id] = cause  # its refund's webhook may yet come: look again soon
            continue
        done.touched.append(item_id)
        done.observed.append(item_id)
        stamp = stamps.get(item_id) if stamps is not None else None
        if stamp is not None:
            done.known[item_id] = (stamp, obs)
        before, state = row.published, row.state()
        known = listings.known(row.sku, count_of) if listings else pools.get(row.sku)
        event = observe(row, obs, known, cause)
        if row.state() != state:
            changed.append(row)
        done.seen[item_id] = obs
        if event is None:
            if before is None or row.cutover_pending:
                done.plan.add(row.sku)  # the pool's count must overwrite it
            continue
        new_events.append(event)
        if event.kind == INTRODUCE:
            if listings is None or not listings.bundles.is_bundle(parse_listing(row.sku)[0]):
                introduced.append(row.sku)
            continue
        entries.append(
            synclog.entry(
                "change",
                now,
                sku=row.sku,
                before=before,
                delta=event.delta,
                after=obs,
                message=logged(cause),
            )
        )
    if 0 < len(introduced) <= 20:
        entries += [synclog.entry("introduce", now, sku=s, message=cause) for s in introduced]
    elif introduced:  # a whole catalogue at once: one line, not thousands
        entries.append(
            synclog.entry(
                "introduce",
                now,
                message=f"{len(introduced)} new SKUs ({introduced[0]} … {introduced[-1]}), {cause}",
            )
        )
    if listings:
        new_events, moved, refused = listings.expand(new_events, count_of)
        done.plan |= moved
        entries += [synclog.entry("change_refused", now, sku=s, message=m) for s, m in refused]
    save_items(conn, changed)
    synclog.insert(conn, entries)
    done.events = append(conn, new_events, now)
    return done
