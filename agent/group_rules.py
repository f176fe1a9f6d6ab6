"""The rules every member holds: each shop's own stock rules, and the group's rule.

Each is a signed record. A shop's own rules (its ``[rules]``) are stated by that shop alone; the
group's rule (a priority shop when low) by whichever member's admin set it. A change is
signed, stored, sent to every member and carried by every pull answer (like the member list),
so a member that was away gets it too. A record is taken only from a live member (or this
agent) whose key signed it, about itself or the group, dated no later than now plus the
allowed skew; of two records about one subject the newer wins, by time and then by domain,
so every member ends with the same ones whatever order they arrived in. Every member can
then show every shop's rules and explain what each would publish.

The group's bundles (`agent.bundles`) are records too, one per bundle (subject
``bundle:<SKU>``), set from any member like the group's rule; a removed bundle stays as a
record without components, so that an older definition arriving late does not bring it back.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import text

from agent import synclog, trust
from agent.bundles import MAX_BUNDLES, Bundle, BundleError, BundleMap, components_from_wire
from agent.clock import Clock
from agent.db import Database, read_state, write_state
from agent.roster import Roster
from agent.rules import (
    Allocate,
    Decision,
    Priority,
    RuleError,
    ShopRules,
    decide,
    priority_from_wire,
    rules_from_wire,
)
from agent.sql import Tx, marks
from agent.transport import PeerCaller

__all__ = [
    "BUNDLE",
    "GROUP",
    "STATE_KEY",
    "RuleBook",
    "RulesRecord",
    "judge",
    "record_from_wire",
]

log = structlog.get_logger(__name__)

STATE_KEY = "rules"  # agent_state key of every record this agent holds, by subject
GROUP = "group"  # the subject of the group's rule
BUNDLE = "bundle:"  # the subject of a bundle's definition: this and the bundle's SKU
MAX_RECORDS = 1000 + MAX_BUNDLES


@dataclasses.dataclass(frozen=True, slots=True)
class RulesRecord:
    """Rules about `subject` (a member's domain, or "group"), stated by member `by`."""

    subject: str
    body: dict[str, Any]
    changed_at: float
    by: str
    proof: str = ""

    def message(self) -> bytes:
        return trust.rules_message(self.subject, self.body, self.changed_at, self.by)

    def order(self) -> tuple[float, str]:
        """Of two records about one subject the one with the greater order wins everywhere."""
        return (self.changed_at, self.by)

    def to_wire(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def priority(self) -> Priority | None:
        return priority_from_wire(self.body.get("priority"))

    @property
    def shop_rules(self) -> ShopRules:
        return rules_from_wire(self.body)

    @property
    def is_group_wide(self) -> bool:
        """About the group (its rule, a bundle), which any member may set."""
        return self.subject == GROUP or self.subject.startswith(BUNDLE)

    @property
    def bundle(self) -> Bundle | None:
        """The bundle this record defines (None: removed, or not a bundle's record)."""
        if not self.subject.startswith(BUNDLE) or self.body.get("components") is None:
            return None
        return components_from_wire(self.subject[len(BUNDLE) :], self.body["components"])


def record_from_wire(raw: Any) -> RulesRecord:
    """Parse a record, bounded in every field, its body checked as rules of its kind;
    RuleError (a ValueError) on anything malformed."""
    if not isinstance(raw, Mapping):
        raise RuleError("a rules record is an object")
    subject, body, changed_at = raw.get("subject"), raw.get("body"), raw.get("changed_at")
    by, proof = raw.get("by"), raw.get("proof", "")
    for name, value in (("subject", subject), ("by", by)):
        longest = trust.MAX_DOMAIN
        if name == "subject" and isinstance(value, str) and value.startswith(BUNDLE):
            longest = len(BUNDLE) + trust.MAX_SKU
        if not isinstance(value, str) or not value or len(value) > longest:
            raise RuleError(f"a rules record's {name} must be a member's domain")
    if not isinstance(body, dict):
        raise RuleError("a rules record's body is an object")
    if isinstance(changed_at, bool) or not isinstance(changed_at, int | float):
        raise RuleError("a rules record's changed_at must be a time")
    if not math.isfinite(changed_at):
        raise RuleError("a rules record's changed_at must be finite")
    if not isinstance(proof, str) or len(proof) > 100:
        raise RuleError("a rules record's proof must be a signature")
    record = RulesRecord(str(subject), body, float(changed_at), str(by), proof)
    if record.subject == GROUP:
        if set(body) - {"priority"}:
            raise RuleError("the group's rules hold only a priority rule")
        record.priority  # noqa: B018 (parsed to refuse a malformed one)
    elif record.subject.startswith(BUNDLE):
        if set(body) != {"components"}:
            raise RuleError("a bundle's record holds only its components")
        try:
            record.bundle  # noqa: B018
        except BundleError as exc:
            raise RuleError(f"bundle {record.subject[len(BUNDLE) :][:80]}: {exc}") from None
    else:
        record.shop_rules  # noqa: B018
    return record


def judge(
    record: RulesRecord,
    current: RulesRecord | None,
    keys: Mapping[str, Ed25519PublicKey],
    *,
    now: float,
    max_skew: float,
) -> str | None:
    """Why `record` is not taken over `current` (None: take it; "" when it is the one held).
    `keys` are the live members' keys, this agent's own included."""
    if current is not None and record.order() <= current.order():
        return "" if record == current else f"older than the rules held for {record.subject}"
    if not record.is_group_wide and record.subject != record.by:
        return f"{record.by[:80]} set rules for {record.subject[:80]}: a shop sets only its own"
    key = keys.get(record.by)
    if key is None:
        return f"rules set by {record.by[:80]}, not a member"
    if not trust.signed_by(key, record.message(), record.proof):
        return f"rules of {record.subject[:80]} not signed by {record.by[:80]}"
    if record.changed_at > now + max_skew:
        return f"rules from {record.by[:80]} are dated in the future"
    return None


class RuleBook:
    """Every rules record this agent holds, and `decide`, the allocation the write pipeline
    asks: this shop's own rules (from its config) and the group's rule."""

    def __init__(
        self,
        *,
        db: Database,
        roster: Roster,
        clock: Clock,
        call: PeerCaller,
        allocate: Allocate,
        shop_rules: ShopRules,
        max_skew: float = 300.0,
    ) -> None:
        self.db, self.roster, self.clock, self.call = db, roster, clock, call
        self.allocate = allocate
        self.shop_rules = shop_rules  # this shop's: its config is their home
        self.priority: Priority | None = None
        self.bundles = BundleMap()
        self.records: dict[str, RulesRecord] = {}
        self.max_skew = max_skew
        self._listeners: list[Callable[[], None]] = []
        #: SKUs no longer bundles, whose items sync as SKUs of their own again from their next
        #: count (read at once by whoever listens: `Agent._rules_changed`)
        self.unbundled: set[str] = set()
        self._refusals: set[str] = set()

    @property
    def shop(self) -> str:
        return self.roster.identity.domain

    def on_change(self, listener: Callable[[], None]) -> None:
        """Call `listener` when what this shop publishes may have changed."""
        self._listeners.append(listener)

    async def load(self) -> None:
        """At start: the records held, and this shop's own stated anew if its config's rules
        differ from what it last told the group."""
        raw = await self.db.get_state(STATE_KEY, {})
        for subject, wire in (raw if isinstance(raw, dict) else {}).items():
            try:
                self.records[subject] = record_from_wire(wire)
            except ValueError:
                log.warning("rules_record_unreadable", subject=str(subject)[:80])
        group = self.records.get(GROUP)
        self.priority = None if group is None else group.priority
        self.bundles = self._bundle_map()
        own = self.records.get(self.shop)
        if own is None or own.body != self.shop_rules.to_wire():  # pulls carry it from here
            await self._state(self.shop, self.shop_rules.to_wire(), tell=False)

    # -- deciding -------------------------------------------------------------------------------

    def decide(self, sku: str, pool: int) -> Decision:
        """What this shop publishes of `sku` at `pool`, and why."""
        return self.allocate(sku, pool, self.shop_rules, self.priority)

    def known_rules(self) -> dict[str, ShopRules]:
        """Every shop's rules as this agent knows them (a shop never heard of: none)."""
        out = {s: r.shop_rules for s, r in self.records.items() if not r.is_group_wide}
        out[self.shop] = self.shop_rules
        return out

    async def explain(self, sku: str, pool: int) -> list[dict[str, Any]]:
        """What each live member would publish of `sku` at `pool`, and which rule decided
        (by the built-in rules; this shop's own answer also asks its allocate hook)."""
        known = self.known_rules()
        out = []
        for shop in sorted(await self.roster.live_domains()):
            rules = known.get(shop, ShopRules())
            rule, matched = rules.for_sku(sku)
            made = self.decide(sku, pool) if shop == self.shop else None
            made = made or decide(sku, pool, shop, rules, self.priority)
            out.append(
                {
                    "shop": shop,
                    "publishes": made.count,
                    "why": made.why or f"the whole pool ({max(0, pool)})",
                    "rules": rule.describe(),
                    "override": matched,
                }
            )
        return out

    # -- changing ------------------------------------------------------------------------------

    async def check(self, rules: ShopRules) -> None:
        """RuleError if an override names a SKU or pattern that matches no SKU this agent
        knows (in the group's pools or this shop): a typo would silently do nothing."""
        if not rules.overrides:
            return
        unmatched = rules.unmatched(sorted(await self._known_skus()))
        if unmatched:
            more = f" (and {len(unmatched) - 1} more)" if len(unmatched) > 1 else ""
            raise RuleError(f"no SKU matches {unmatched[0]!r}{more}: check the spelling")

    async def set_shop_rules(self, rules: ShopRules) -> dict[str, Any]:
        """This shop's new rules (the caller stored them in the config): taken at once and
        told to every member."""
        self.shop_rules = rules
        return await self._state(self.shop, rules.to_wire())

    async def set_priority(self, priority: Priority | None) -> dict[str, Any]:
        """The admin of this shop sets the group's rule, for every member."""
        if priority is not None and priority.shop not in await self.roster.live_domains():
            raise RuleError(
                f"{priority.shop} is not a member of this group, so it cannot be the priority shop"
            )
        body = {"priority": None if priority is None else priority.to_wire()}
        return await self._state(GROUP, body)

    # -- bundles -------------------------------------------------------------------------------

    def bundle_definitions(self) -> list[tuple[RulesRecord, Bundle]]:
        """Every bundle defined (removed ones left out), with its record, by SKU."""
        found = []
        for subject, record in sorted(self.records.items()):
            if not subject.startswith(BUNDLE):
                continue
            try:
                bundle = record.bundle
            except BundleError:  # checked when taken: only a record from an older release
                continue
            if bundle is not None:
                found.append((record, bundle))
        return found

    async def set_bundle(self, bundle: Bundle) -> dict[str, Any]:
        """Define (or redefine) a bundle for the whole group. RuleError if a component is
        unknown here, is a bundle, or the bundle's SKU is some bundle's component."""
        for part, _ in bundle.components:
            if part in self.bundles.bundles:
                raise RuleError(f"{part} is a bundle: a component must be a stocked SKU")
        takers = sorted(self.bundles.of_component.get(bundle.sku, ()))
        if takers:
            raise RuleError(f"{bundle.sku} is a component of {takers[0]}: it cannot be a bundle")
        if bundle.sku not in self.bundles.bundles and len(self.bundles.bundles) >= MAX_BUNDLES:
            raise RuleError(f"a group has at most {MAX_BUNDLES} bundles")
        known = await self._known_skus([p for p, _ in bundle.components])
        missing = [p for p, _ in bundle.components if p not in known]
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise RuleError(
                f"component {missing[0]}{more} is not a SKU of any shop in the group: "
                "check the spelling"
            )
        return await self._state(
            BUNDLE + bundle.sku, {"components": bundle.to_wire()["components"]}
        )

    async def remove_bundle(self, sku: str) -> dict[str, Any]:
        """Stop treating `sku` as a bundle, in every member. RuleError if it is none."""
        if sku not in self.bundles.bundles and sku not in self.bundles.refused:
            raise RuleError(f"{sku} is not a bundle")
        return await self._state(BUNDLE + sku, {"components": None})

    async def _known_skus(self, skus: list[str] | None = None) -> set[str]:
        """The SKUs this agent knows (in the group's pools or this shop) among `skus` (all
        when None)."""
        if skus is not None and not skus:
            return set()
        where, args = "sku IS NOT NULL", tuple(skus or ())
        if skus is not None:
            where = f"sku IN ({marks(len(skus))})"
        query = f"SELECT sku FROM pool WHERE {where} UNION SELECT sku FROM item WHERE {where}"
        rows = await self.db.read(lambda conn: Tx(conn).rows(query, (*args, *args)))
        return {row[0] for row in rows}

    def _bundle_map(self) -> BundleMap:
        return BundleMap(bundle for _, bundle in self.bundle_definitions())

    async def _state(
        self, subject: str, body: dict[str, Any], *, tell: bool = True
    ) -> dict[str, Any]:
        """Sign a new record about `subject` as this shop, store it, tell every member (one
        away gets it with its next pull)."""
        held = self.records.get(subject)
        changed = self.clock.now() if held is None else max(self.clock.now(), held.changed_at)
        if held is not None and changed <= held.changed_at:
            changed = held.changed_at + 0.001
        record = RulesRecord(subject, body, changed, self.shop)
        record = dataclasses.replace(record, proof=self.roster.sign(record.message()))
        await self._store([record], via=self.shop)
        told: list[str] = []
        if tell:
            body = {"records": [record.to_wire()]}
            told = await self.roster.tell_all(self.call, "/peer/rules", body)
        return {"record": record.to_wire(), "told": told}

    def wire(self) -> list[dict[str, Any]]:
        """Every record held, for a pull answer."""
        return [r.to_wire() for _, r in sorted(self.records.items())]

    async def heard(self, raw: Any, via: str) -> list[str]:
        """Records from member `via` (sent, or in a pull answer): each taken if it is newer
        than the one held and signed by a live member about itself or the group; returns why
        records were refused."""
        if not isinstance(raw, list):
            return [self._refused("rules records must be a list", via)]
        keys: Mapping[str, Ed25519PublicKey] | None = None
        taken: list[RulesRecord] = []
        refusals: list[str] = []
        for wire in raw[:MAX_RECORDS]:
            try:
                record = record_from_wire(wire)
            except ValueError as exc:
                refusals.append(self._refused(f"malformed rules record: {exc}", via))
                continue
            current = self.records.get(record.subject)
            if current is not None and record.order() <= current.order():
                continue  # nothing new: nearly every pull
            if record.subject == self.shop:
                refusals.append(self._refused("a record about this shop, not by it", via))
                continue
            keys = keys if keys is not None else await self.roster.live_keys()
            reason = judge(record, current, keys, now=self.clock.now(), max_skew=self.max_skew)
            if reason is None:
                taken.append(record)
            elif reason:
                refusals.append(self._refused(reason, via))
        if taken:
            await self._store(taken, via=via)
        return refusals

    def _refused(self, reason: str, via: str) -> str:
        if reason not in self._refusals and len(self._refusals) < 1000:
            self._refusals.add(reason)
            log.warning("rules_refused", peer=via, reason=reason[:300])
        return reason

    async def _store(self, records: list[RulesRecord], *, via: str) -> None:
        now = self.clock.now()
        async with self.db.transaction() as session:
            held = await read_state(session, STATE_KEY, {})
            held = held if isinstance(held, dict) else {}
            fresh = []
            for record in records:
                old = held.get(record.subject)
                if isinstance(old, dict) and (old.get("changed_at"), old.get("by")) >= (
                    record.changed_at,
                    record.by,
                ):
                    continue  # a newer one was stored meanwhile
                held[record.subject] = record.to_wire()
                fresh.append(record)
                what = _subject(record)
                synclog.record(
                    session,
                    "rules",
                    now,
                    peer=record.by,
                    message=f"rules of {what}: {_describe(record)} (via {via})",
                )
            before = set(self.bundles.bundles)
            ended = [
                r.subject[len(BUNDLE) :]
                for r in fresh
                if r.subject.startswith(BUNDLE) and r.body.get("components") is None
            ]
            for sku in ended:
                if sku in before:  # its items' counts were bundles, not stock: seen anew
                    await session.execute(
                        text("UPDATE item SET published = NULL WHERE sku = :sku"), {"sku": sku}
                    )
                    self.unbundled.add(sku)
            await write_state(session, STATE_KEY, held)
        for record in fresh:
            self.records[record.subject] = record
        if any(r.subject == GROUP for r in fresh):
            self.priority = self.records[GROUP].priority
        if any(r.subject.startswith(BUNDLE) for r in fresh):
            self.bundles = self._bundle_map()
        if any(r.is_group_wide or r.subject == self.shop for r in fresh):
            for listener in self._listeners:
                listener()


def _subject(record: RulesRecord) -> str:
    if record.subject == GROUP:
        return "the group's rule"
    if record.subject.startswith(BUNDLE):
        return f"bundle {record.subject[len(BUNDLE) :]}"
    return record.subject


def _describe(record: RulesRecord) -> str:
    if record.subject.startswith(BUNDLE):
        bundle = record.bundle
        return "removed" if bundle is None else bundle.describe()
    if record.subject != GROUP:
        rules = record.shop_rules
        extra = f"; {len(rules.overrides)} SKU rules" if rules.overrides else ""
        return rules.default.describe() + extra
    priority = record.priority
    if priority is None:
        return "no priority shop"
    return f"priority {priority.shop} while a pool is {priority.at_most} or less"
