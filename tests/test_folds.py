"""When a peer's claim that it folded history this agent lacks leads to a re-import."""

from __future__ import annotations

from agent.folds import AWAY, FoldClaims

S = ("shop-c.example.com", "e1")  # the stream with the gap
MINE = {S: 10}
IN_REACH: float | None = None


def test_a_fold_backed_by_a_second_member_is_re_imported_from() -> None:
    claims = FoldClaims()
    away = {"b": IN_REACH, "c": IN_REACH}
    first = claims.heard("c", {S: 40}, {S: 40}, MINE, away, now=1.0)
    assert first.source is None and first.ask == ("b",)  # b may still hold the events
    second = claims.heard("b", {S: 40}, {S: 40}, MINE, away, now=2.0)
    assert second.source == "b" and second.disputed == ()


def test_a_peer_that_still_holds_the_events_fills_the_gap_instead() -> None:
    claims = FoldClaims()
    away = {"b": IN_REACH, "c": IN_REACH}
    claims.heard("c", {S: 40}, {S: 40}, MINE, away, now=1.0)
    held = claims.heard("b", {}, {S: 40}, MINE, away, now=2.0)
    assert held.source is None and held.disputed == ()
    assert claims.heard("b", {}, {S: 40}, {S: 40}, away, now=3.0).source is None
    assert claims.gaps == {}  # b sent them: nothing is missing any more


def test_one_members_word_against_a_member_that_holds_no_more_is_disputed_once() -> None:
    claims = FoldClaims()
    away = {"b": IN_REACH, "c": IN_REACH}
    claims.heard("c", {S: 40}, {S: 40}, MINE, away, now=1.0)
    verdict = claims.heard("b", {}, {S: 10}, MINE, away, now=2.0)
    assert verdict.source is None
    assert verdict.disputed == (("c", S, 40, "no other member holds it"),)
    again = claims.heard("c", {S: 40}, {S: 40}, MINE, away, now=3.0)
    assert again.source is None and again.disputed == ()  # said once
    # a second member that did fold it backs the claim: the re-import goes ahead
    backed = claims.heard("b", {S: 40}, {S: 40}, MINE, away, now=4.0)
    assert backed.source == "b"


def test_a_claim_beyond_the_claimants_own_vector_is_not_believed() -> None:
    claims = FoldClaims()
    verdict = claims.heard("c", {S: 40}, {S: 12}, MINE, {"c": IN_REACH}, now=1.0)
    assert verdict.source is None and claims.gaps == {}
    assert verdict.disputed == (("c", S, 40, "beyond what it says it holds"),)


def test_with_no_other_member_in_reach_the_one_claim_is_taken() -> None:
    alone = FoldClaims()
    assert alone.heard("c", {S: 40}, {S: 40}, MINE, {"c": IN_REACH}, now=1.0).source == "c"
    # b has been out of reach for longer than AWAY: it neither fills the gap nor disputes it
    claims = FoldClaims()
    away = {"b": 0.0, "c": IN_REACH}
    verdict = claims.heard("c", {S: 40}, {S: 40}, MINE, away, now=AWAY + 1.0)
    assert verdict.source == "c" and verdict.disputed == ()


def test_a_member_out_of_reach_for_less_than_away_is_waited_for() -> None:
    claims = FoldClaims()
    away = {"b": 0.0, "c": IN_REACH}
    verdict = claims.heard("c", {S: 40}, {S: 40}, MINE, away, now=AWAY / 2)
    assert verdict.source is None and verdict.ask == ("b",)


def test_a_fold_this_agent_already_holds_is_no_gap() -> None:
    claims = FoldClaims()
    verdict = claims.heard("c", {S: 10}, {S: 40}, MINE, {"c": IN_REACH}, now=1.0)
    assert verdict == verdict.__class__() and claims.gaps == {}


def test_the_source_must_hold_what_this_agent_folded_itself() -> None:
    # Seed 308571: this agent folded its own stream up to 9; b folded S but holds only 4 of
    # this agent's stream, so b's snapshot could not be this agent's base. c folded S too
    # and holds all 9: the re-import is from c, even though b answered last.
    own = ("a", "e1")
    mine, kept = {S: 10, own: 9}, {own: 9}
    claims = FoldClaims()
    away = {"b": IN_REACH, "c": IN_REACH}
    first = claims.heard("b", {S: 40}, {S: 40, own: 4}, mine, away, now=1.0, kept=kept)
    assert first.source is None  # c may still hold the events
    claims.heard("c", {S: 40}, {S: 40, own: 9}, mine, away, now=2.0, kept=kept)
    again = claims.heard("b", {S: 40}, {S: 40, own: 4}, mine, away, now=3.0, kept=kept)
    assert again.source == "c"


def test_with_no_claimant_holding_what_was_folded_here_the_gap_waits() -> None:
    own = ("a", "e1")
    claims = FoldClaims()
    verdict = claims.heard(
        "c", {S: 40}, {S: 40, own: 4}, {S: 10, own: 9}, {"c": IN_REACH}, now=1.0, kept={own: 9}
    )
    assert verdict.source is None and verdict.disputed == ()
    assert S in claims.gaps  # still a gap: c's next answer, holding all 9, names c
    later = claims.heard(
        "c", {S: 40}, {S: 40, own: 9}, {S: 10, own: 9}, {"c": IN_REACH}, now=2.0, kept={own: 9}
    )
    assert later.source == "c"
