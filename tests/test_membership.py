"""Who may change a member record (`agent.membership.judge`), on values: no I/O."""

from __future__ import annotations

import dataclasses

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent import trust
from agent.membership import Admission, Member, judge, member_from_wire
from agent.signing import public_key_b64

NOW = 1_800_000_000.0
SKEW = 300.0
A, B, C, X = (Ed25519PrivateKey.from_private_bytes(bytes([n]) * 32) for n in (1, 2, 3, 4))


def stated(key: Ed25519PrivateKey, domain: str, **fields: object) -> Member:
    """A record of `domain` with `key`, its statement signed by `key` (override anything)."""
    member = Member(domain, f"https://{domain}", public_key_b64(key), changed_at=NOW - 100)
    member = dataclasses.replace(member, **fields)  # type: ignore[arg-type]
    return dataclasses.replace(member, proof=trust.sign(key, member.statement()))


def admitted(member: Member, by: str, key: Ed25519PrivateKey, at: float = NOW - 200) -> Member:
    adm = Admission(by=by, at=at, url=member.agent_url, signature="")
    adm = dataclasses.replace(adm, signature=trust.sign(key, member.admission_message(adm)))
    return dataclasses.replace(member, admission=adm)


ADMITTERS = {"a.example.com": A.public_key(), "b.example.com": B.public_key()}


def verdict(heard: Member, known: Member | None = None, **kw: object) -> tuple[Member | None, str]:
    return judge(heard, known, admitters=ADMITTERS, now=NOW, max_skew=SKEW, **kw)  # type: ignore[arg-type]


def test_a_new_member_enters_with_a_members_admission() -> None:
    heard = admitted(stated(C, "c.example.com"), "b.example.com", B)
    stored, reason = verdict(heard)
    assert stored == heard and reason == ""


@pytest.mark.parametrize(
    ("admitter", "signer"),
    [
        ("b.example.com", X),  # "admitted by b", signed by somebody else
        ("x.example.com", X),  # admitted by a stranger
        ("c.example.com", C),  # admitted by itself
    ],
)
def test_a_new_member_without_a_true_admission_is_refused(
    admitter: str, signer: Ed25519PrivateKey
) -> None:
    heard = admitted(stated(C, "c.example.com"), admitter, signer)
    assert verdict(heard) == (None, "c.example.com: not admitted by a member")
    assert verdict(stated(C, "c.example.com")) == (None, "c.example.com: not admitted by a member")


def test_the_trusted_list_of_the_chosen_master_needs_no_admission() -> None:
    heard = stated(C, "c.example.com")
    assert verdict(heard, trusted=True) == (heard, "")


def test_a_members_own_newer_statement_changes_its_state_and_url() -> None:
    known = admitted(stated(C, "c.example.com"), "b.example.com", B)
    heard = stated(C, "c.example.com", state="paused", agent_url="https://new.c", changed_at=NOW)
    stored, reason = verdict(heard, known)
    assert reason == "" and stored is not None
    assert (stored.state, stored.agent_url, stored.admission) == (
        "paused",
        "https://new.c",
        known.admission,
    )


def test_a_statement_signed_by_another_key_is_refused() -> None:
    known = stated(C, "c.example.com")
    forged = dataclasses.replace(known, state="left", changed_at=NOW)
    forged = dataclasses.replace(forged, proof=trust.sign(B, forged.statement()))
    assert verdict(forged, known) == (None, "c.example.com: statement not signed by its key")


def test_a_key_never_changes_by_gossip() -> None:
    known = stated(C, "c.example.com")
    rekeyed = stated(X, "c.example.com", changed_at=NOW)  # self-consistent, but a new key
    assert verdict(rekeyed, known) == (
        None,
        "c.example.com: a member's key changes only by its own signature",
    )
    readmitted = admitted(rekeyed, "b.example.com", B, at=NOW - 1)  # not after it left
    assert verdict(readmitted, known)[0] is None


def test_a_member_that_left_comes_back_only_with_a_newer_admission() -> None:
    left = stated(C, "c.example.com", state="left", changed_at=NOW - 50)
    again = stated(C, "c.example.com", state="active", changed_at=NOW)
    assert verdict(again, left) == (None, "")  # its own word is not enough: it left
    back = admitted(again, "a.example.com", A, at=NOW - 10)
    stored, _ = verdict(back, left)
    assert stored is not None and stored.state == "active"
    stale = admitted(again, "a.example.com", A, at=NOW - 60)  # admitted before it left
    assert verdict(stale, left)[0] is None


def test_times_beyond_the_allowed_skew_are_refused() -> None:
    known = stated(C, "c.example.com")
    future = stated(C, "c.example.com", changed_at=NOW + SKEW + 1)
    assert verdict(future, known) == (None, "c.example.com: dated in the future")
    assert verdict(stated(C, "c.example.com", changed_at=NOW + SKEW - 1), known)[0] is not None


def test_an_old_or_unsigned_statement_brings_nothing() -> None:
    known = stated(C, "c.example.com", changed_at=NOW)
    older = stated(C, "c.example.com", state="left", changed_at=NOW - 1)
    assert verdict(older, known) == (None, "")
    unsigned = dataclasses.replace(known, state="left", changed_at=NOW + 1, proof="")
    assert verdict(unsigned, known) == (None, "")


@pytest.mark.parametrize(
    "raw",
    [
        {"domain": "[/]crash.example.com"},
        {"domain": "x" * 254},
        {"domain": "c.example.com", "agent_url": "ftp://c"},
        {"domain": "c.example.com", "agent_url": "https://user@c"},
        {"domain": "c.example.com", "agent_url": "https://c/" + "p" * 600},
        {"domain": "c.example.com", "public_key": "AAAA"},
        {"domain": "c.example.com", "state": "owner"},
        {"domain": "c.example.com", "changed_at": float("nan")},
        {"domain": "c.example.com", "admission": {"by": "a.example.com"}},
    ],
)
def test_malformed_records_are_refused_with_a_reason(raw: dict[str, object]) -> None:
    good = stated(C, "c.example.com").to_wire()
    with pytest.raises(ValueError, match=r"\w"):
        member_from_wire({**good, **raw})
