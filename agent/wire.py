"""The wire form of what agents exchange: events, version vectors and snapshots.

Everything read from a peer is parsed here, bounded in every field (`agent.trust` holds the
limits); ValueError on anything malformed, which the peer door answers with 400.
"""

from __future__ import annotations

from typing import Any

from agent import ledger, trust
from agent.ledger import Pool, Snapshot, SnapshotHead, Vector
from agent.models import EventRow

__all__ = [
    "MAX_PAGE",
    "MAX_VECTOR",
    "event_from_wire",
    "event_to_wire",
    "pool_to_wire",
    "pools_from_wire",
    "snapshot_from_wire",
    "snapshot_head_from_wire",
    "snapshot_to_wire",
    "vector_from_wire",
    "vector_to_wire",
]

MAX_VECTOR = 4096  # (origin, epoch) entries a peer's vector may carry
MAX_PAGE = 50_000  # pools a page of a snapshot may carry (about 3.5 MB of JSON)


def _text(value: Any, what: str, limit: int) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must be a non-empty string")
    if len(value) > limit:
        raise ValueError(f"{what} is longer than {limit} characters")
    return value


def event_to_wire(e: EventRow) -> list[Any]:
    """Compact list form of an event for the wire: its row (`ledger.EVENT_COLUMNS` order),
    its proof of origin last. Times go as floats, as the origin signed them."""
    return list(ledger.event_values(e))


_INT64 = 2**63


def _int(value: Any, what: str, *, low: int = -_INT64) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value < _INT64:
        raise ValueError(f"{what} must be an integer from {low} to 2**63-1")
    return value


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{what} must be a number")
    number = float(value)
    if number != number or number in (float("inf"), float("-inf")):
        raise ValueError(f"{what} must be finite")
    return number


def event_from_wire(raw: Any) -> EventRow:
    """Parse one event, bounded in every field; ValueError on anything malformed. Its proof
    is checked against the member list when it is applied (`Replicator.receive`)."""
    if not isinstance(raw, list) or len(raw) != 11:
        raise ValueError("an event is a list of 11 fields, its proof last")
    origin, epoch, seq, sku, kind, delta, count, created, cause, at, proof = raw
    origin = _text(origin, "origin", trust.MAX_DOMAIN)
    epoch = _text(epoch, "epoch", trust.MAX_EPOCH)
    sku = _text(sku, "sku", trust.MAX_SKU)
    kind = _text(kind, "kind", trust.MAX_KIND)
    seq = _int(seq, "seq", low=1)
    delta = _int(delta, "delta")
    if count is not None:
        count = _int(count, "count")
    if kind == ledger.INTRODUCE and (count is None or created is None):
        raise ValueError("an introduce carries its count and creation time")
    if not isinstance(cause, str) or len(cause) > trust.MAX_CAUSE:
        raise ValueError(f"cause must be a string of at most {trust.MAX_CAUSE} characters")
    if not isinstance(proof, str) or len(proof) > 100:
        raise ValueError("proof must be the origin's signature")
    created = None if created is None else _number(created, "item_created")
    return ledger.event_of(
        (origin, epoch, seq, sku, kind, delta, count, created, cause, _number(at, "at"), proof)
    )


def vector_to_wire(vector: Vector) -> list[list[Any]]:
    return [[o, e, s] for (o, e), s in sorted(vector.items())]


def vector_from_wire(raw: Any) -> Vector:
    """Parse `[[origin, epoch, seq], …]` (at most `MAX_VECTOR` entries); ValueError on
    anything malformed."""
    if not isinstance(raw, list):
        raise ValueError("a vector is a list of [origin, epoch, seq]")
    if len(raw) > MAX_VECTOR:
        raise ValueError(f"a vector has at most {MAX_VECTOR} entries")
    out: Vector = {}
    for entry in raw:
        if not isinstance(entry, list) or len(entry) != 3:
            raise ValueError("a vector entry is [origin, epoch, seq]")
        origin = _text(entry[0], "vector origin", trust.MAX_DOMAIN)
        epoch = _text(entry[1], "vector epoch", trust.MAX_EPOCH)
        out[(origin, epoch)] = _int(entry[2], "vector seq", low=0)
    return out


def pool_to_wire(p: Pool) -> list[Any]:
    """`[sku, base, base_created, base_origin, deltas]`."""
    return [p.sku, p.base, p.base_created, p.base_origin, p.deltas]


def snapshot_to_wire(snap: Snapshot) -> dict[str, Any]:
    """`{"pools": [[sku, base, base_created, base_origin, deltas], …], "vector": …,
    "extra_events": […]}`: the whole snapshot in one answer, the form every release since the
    first has sent (a paged snapshot sends the same parts apart: `snapshot_head_from_wire`,
    `pools_from_wire`)."""
    return {
        "pools": [pool_to_wire(p) for p in snap.pools],
        "vector": vector_to_wire(snap.vector),
        "extra_events": [event_to_wire(e) for e in snap.extra],
    }


def _pool_from_wire(raw: Any) -> Pool:
    if not isinstance(raw, list) or len(raw) != 5:
        raise ValueError("a snapshot pool is [sku, base, base_created, base_origin, deltas]")
    sku, base, created, origin, deltas = raw
    return Pool(
        sku=_text(sku, "pool sku", trust.MAX_SKU),
        base=None if base is None else _int(base, "pool base"),
        base_created=None if created is None else _number(created, "pool base_created"),
        base_origin=None if origin is None else _text(origin, "pool origin", trust.MAX_DOMAIN),
        deltas=_int(deltas, "pool deltas"),
    )


def pools_from_wire(raw: Any, most: int) -> list[Pool]:
    """A list of at most `most` pools; ValueError on anything malformed."""
    if not isinstance(raw, list) or len(raw) > most:
        raise ValueError(f"a page of pools is a list of at most {most}")
    return [_pool_from_wire(p) for p in raw]


def _head_from_wire(raw: Any) -> SnapshotHead:
    """The vector and extra events of a snapshot, whole or paged."""
    if not isinstance(raw, dict):
        raise ValueError("a snapshot is an object")
    extra = raw.get("extra_events", [])
    if not isinstance(extra, list):
        raise ValueError("a snapshot's extra_events is a list")
    return SnapshotHead(
        vector=vector_from_wire(raw.get("vector")), extra=[event_from_wire(e) for e in extra]
    )


def snapshot_head_from_wire(raw: Any) -> tuple[SnapshotHead, str, int, int]:
    """A paged snapshot's head: (vector and extra events, its id, pages, pools)."""
    head = _head_from_wire(raw)
    snapshot_id = _text(raw.get("snapshot"), "snapshot id", 64)
    return (
        head,
        snapshot_id,
        _int(raw.get("pages"), "pages", low=0),
        _int(raw.get("pool_count"), "pool_count", low=0),
    )


def snapshot_from_wire(raw: Any) -> Snapshot:
    """Parse a master's snapshot; ValueError on anything malformed."""
    head = _head_from_wire(raw)
    pools = raw.get("pools")
    if not isinstance(pools, list):
        raise ValueError("a snapshot's pools are a list")
    return Snapshot(pools=[_pool_from_wire(p) for p in pools], vector=head.vector, extra=head.extra)
