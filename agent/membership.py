"""Member records and who may change them (DESIGN §6, "authority, not only authentication").

A member record is what the group knows of one shop: domain, agent URL, public key, state
(active, paused, left) since when — and the two proofs that give it authority:
- the **admission**, signed by the member that accepted the shop's join request, over the
  shop's domain, URL and key and the time of the accept;
- the **statement**, signed by the shop itself, over its URL, key, state and `changed_at`.
`judge` decides what a record heard from a peer may change: a shop enters a list only with an
admission by a member already in it (or from the trusted list of the master a joiner chose);
its URL and state change only by its own newer statement; its key never changes by gossip; no
time may lie beyond now plus the allowed clock skew. Pure functions on values: no I/O.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from typing import Any, NamedTuple

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent import trust
from agent.models import PeerRow
from agent.signing import SigningError, fingerprint, load_public_key_b64

__all__ = [
    "LIVE",
    "STATES",
    "Admission",
    "Member",
    "admission_from_wire",
    "judge",
    "MEMBER_COLUMNS",
    "MemberRow",
    "member_from_row",
    "member_from_wire",
]

STATES = ("active", "paused", "left")
LIVE = ("active", "paused")


@dataclasses.dataclass(frozen=True, slots=True)
class Admission:
    """`by` (a member's domain) admitted the shop at `url` with its key at time `at`."""

    by: str
    at: float
    url: str
    signature: str

    def to_wire(self) -> dict[str, Any]:
        return {"by": self.by, "at": self.at, "url": self.url, "signature": self.signature}


@dataclasses.dataclass(frozen=True, slots=True)
class Member:
    """One shop of the group as the member lists carry it (see the module docstring)."""

    domain: str
    agent_url: str
    public_key: str
    state: str = "active"
    changed_at: float = 0.0
    proof: str = ""  # the shop's own signature over its statement; "" if none
    admission: Admission | None = None

    @property
    def key_id(self) -> str:
        return fingerprint(self.public_key)

    def statement(self) -> bytes:
        return trust.statement_message(
            self.domain, self.agent_url, self.public_key, self.state, self.changed_at
        )

    def admission_message(self, admission: Admission) -> bytes:
        return trust.admission_message(
            self.domain, admission.url, self.public_key, admission.at, admission.by
        )

    def to_wire(self) -> dict[str, Any]:
        return {
            "domain": self.domain,
            "agent_url": self.agent_url,
            "public_key": self.public_key,
            "state": self.state,
            "changed_at": self.changed_at,
            "proof": self.proof,
            "admission": None if self.admission is None else self.admission.to_wire(),
        }


def _time(raw: Any, what: str) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
        raise ValueError(f"{what} must be a finite number")
    return float(raw)


def admission_from_wire(raw: Any) -> Admission | None:
    """Parse an admission (None when there is none); ValueError if malformed."""
    if raw is None or raw == "":
        return None
    if not isinstance(raw, dict):
        raise ValueError("an admission is an object")
    signature = raw.get("signature")
    if not isinstance(signature, str) or len(signature) > 100:
        raise ValueError("an admission carries its signature")
    return Admission(
        by=trust.check_domain(raw.get("by"), "admission by"),
        at=_time(raw.get("at"), "admission at"),
        url=trust.check_agent_url(raw.get("url"), "admission url"),
        signature=signature,
    )


def member_from_wire(raw: Any) -> Member:
    """Parse one member record; ValueError says what is malformed (proofs are not checked)."""
    if not isinstance(raw, dict):
        raise ValueError("a member is an object")
    domain = trust.check_domain(raw.get("domain"), "member domain")
    url = trust.check_agent_url(raw.get("agent_url"), "member agent_url")
    try:
        load_public_key_b64(str(raw.get("public_key", "")))
    except SigningError as exc:
        raise ValueError(f"member public_key: {exc}") from None
    state = raw.get("state", "active")
    if state not in STATES:
        raise ValueError(f"unknown member state {str(state)[:20]!r}")
    proof = raw.get("proof") or ""
    if not isinstance(proof, str) or len(proof) > 100:
        raise ValueError("a member's proof is a signature")
    return Member(
        domain=domain,
        agent_url=url,
        public_key=raw["public_key"].strip(),
        state=state,
        changed_at=_time(raw.get("changed_at", 0.0), "changed_at"),
        proof=proof,
        admission=admission_from_wire(raw.get("admission")),
    )


class MemberRow(NamedTuple):
    """The columns of a member's row that make its record (`MEMBER_COLUMNS`, in order)."""

    domain: str
    agent_url: str
    public_key: str
    state: str
    changed_at: float
    proof: str
    admission: str


#: `SELECT {MEMBER_COLUMNS} FROM peer` reads rows for `MemberRow`, without the ORM (every pull
#: answer carries the member list, and every pull brings one to compare).
MEMBER_COLUMNS = "domain, agent_url, public_key, state, changed_at, proof, admission"


def member_from_row(row: PeerRow | MemberRow) -> Member:
    """The record of a member as this agent stores it."""
    admission = None
    if row.admission:
        try:
            admission = admission_from_wire(json.loads(row.admission))
        except ValueError:
            admission = None
    return Member(
        domain=row.domain,
        agent_url=row.agent_url,
        public_key=row.public_key,
        state=row.state,
        changed_at=row.changed_at,
        proof=row.proof,
        admission=admission,
    )


def _key(text: str) -> Ed25519PublicKey:
    return load_public_key_b64(text)


def _stated(member: Member) -> bool:
    return bool(member.proof) and trust.signed_by(
        _key(member.public_key), member.statement(), member.proof
    )


def _admitted(member: Member, admitters: Mapping[str, Ed25519PublicKey]) -> bool:
    adm = member.admission
    if adm is None or adm.by == member.domain or adm.by not in admitters:
        return False
    return trust.signed_by(admitters[adm.by], member.admission_message(adm), adm.signature)


def _entered(member: Member, admission: Admission, stated: bool) -> Member:
    """The record of a newly admitted shop: its own statement if it is as new as the
    admission, else active at the admission, at the URL the admission names."""
    if stated and member.changed_at >= admission.at:
        return member
    return dataclasses.replace(
        member, agent_url=admission.url, state="active", changed_at=admission.at, proof=""
    )


def judge(
    heard: Member,
    known: Member | None,
    *,
    admitters: Mapping[str, Ed25519PublicKey],
    now: float,
    max_skew: float,
    trusted: bool = False,
) -> tuple[Member | None, str]:
    """What a record heard from a peer changes: (the record to store, "") to take it,
    (None, "") when it brings nothing new, (None, reason) when it is refused.

    `admitters` holds the keys of the members that may admit others (this agent and its live
    members); `trusted` is True only for the list in the welcome of the master this agent
    asked to join, the one party it has chosen to believe.
    """
    limit = now + max_skew
    if heard.changed_at > limit or (heard.admission and heard.admission.at > limit):
        return None, f"{heard.domain}: dated in the future"
    stated = _stated(heard)
    if heard.proof and not stated:
        return None, f"{heard.domain}: statement not signed by its key"
    admitted = heard.admission is not None and _admitted(heard, admitters)
    if known is None:
        if trusted:
            return heard, ""
        if admitted:
            assert heard.admission is not None
            return _entered(heard, heard.admission, stated), ""
        return None, f"{heard.domain}: not admitted by a member"
    rejoined = (
        known.state == "left"
        and admitted
        and heard.admission is not None
        and heard.admission.at > known.changed_at
    )
    if rejoined:
        assert heard.admission is not None
        return _entered(heard, heard.admission, stated), ""
    if heard.public_key != known.public_key:
        return None, f"{heard.domain}: a member's key changes only by its own signature"
    if known.state == "left" or not stated or heard.changed_at <= known.changed_at:
        return None, ""  # nothing newer that the member itself said
    return dataclasses.replace(
        heard, admission=known.admission or (heard.admission if admitted else None)
    ), ""
