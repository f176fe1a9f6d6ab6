"""Stock rules (`agent.rules`): what a shop publishes of the pool, and why."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from agent import trust
from agent.group_rules import GROUP, RulesRecord, judge, record_from_wire
from agent.hookspecs import hookimpl
from agent.plugins import Registry, make_plugin_manager
from agent.rules import (
    Decision,
    Priority,
    RuleError,
    ShopRule,
    ShopRules,
    decide,
    priority_from_wire,
    rules_from_wire,
)

SHOP, OTHER = "a.example.com", "b.example.com"


def _decide(
    pool: int, raw: dict[str, Any], sku: str = "SKU-1", priority: Priority | None = None
) -> Decision:
    return decide(sku, pool, SHOP, rules_from_wire(raw), priority)


def test_without_rules_the_whole_pool_is_published_and_never_below_zero() -> None:
    assert _decide(7, {}).count == 7
    assert _decide(7, {}).why == ""
    assert _decide(-2, {}).count == 0


@pytest.mark.parametrize(
    ("pool", "count", "why"),
    [
        (4, 0, "buffer 5: publishing 0 of 4"),
        (5, 0, "buffer 5: publishing 0 of 5"),
        (6, 6, ""),
    ],
)
def test_a_buffer_publishes_nothing_at_or_below_it(pool: int, count: int, why: str) -> None:
    decision = _decide(pool, {"buffer": 5})
    assert (decision.count, decision.why) == (count, why)


def test_a_percentage_rounds_down_adds_virtual_units_and_never_exceeds_the_pool() -> None:
    assert _decide(10, {"percent": 50}).count == 5
    assert _decide(9, {"percent": 50}).count == 4
    assert _decide(9, {"percent": 50}).why == "percent 50: publishing 4 of 9"
    assert _decide(9, {"percent": 50, "plus": 2}).count == 6
    assert _decide(3, {"percent": 90, "plus": 5}).count == 3  # never above the pool
    assert _decide(100, {"percent": 33.5}).count == 33


def test_rules_apply_in_order_buffer_then_percent_then_max() -> None:
    rules = {"buffer": 2, "percent": 50, "max": 10}
    assert _decide(2, rules).why == "buffer 2: publishing 0 of 2"
    assert _decide(8, rules).count == 4
    decision = _decide(40, rules)
    assert (decision.count, decision.why) == (10, "percent 50, max 10: publishing 10 of 40")


def test_the_most_specific_override_wins_over_the_shop_defaults() -> None:
    rules = rules_from_wire(
        {
            "buffer": 3,
            "max": 100,
            "skus": {"CASE-*": {"max": 10}, "CASE-12*": {"max": 5}, "CASE-123": {"buffer": 0}},
        }
    )
    assert rules.for_sku("SKU-9") == (ShopRule(buffer=3, max=100), None)
    assert rules.for_sku("CASE-9") == (ShopRule(buffer=3, max=10), "CASE-*")
    assert rules.for_sku("CASE-129") == (ShopRule(buffer=3, max=5), "CASE-12*")
    assert rules.for_sku("CASE-123") == (ShopRule(buffer=0, max=100), "CASE-123")
    assert decide("CASE-123", 2, SHOP, rules).count == 2  # the exact SKU's buffer 0
    assert decide("CASE-9", 2, SHOP, rules).count == 0  # the default buffer 3


def test_patterns_that_match_nothing_are_found() -> None:
    rules = rules_from_wire({"skus": {"CASE-*": {"max": 1}, "SKU-1": {"max": 1}, "TYPO": {}}})
    assert rules.unmatched(["CASE-7", "SKU-1", "SKU-2"]) == ["TYPO"]


def test_the_priority_shop_takes_the_whole_pool_when_low_and_the_others_nothing() -> None:
    priority = Priority(OTHER, at_most=3)
    mine = _decide(3, {"buffer": 5}, priority=priority)
    assert (mine.count, mine.why) == (0, f"priority {OTHER} at ≤ 3: publishing 0 of 3")
    theirs = decide("SKU-1", 3, OTHER, rules_from_wire({"buffer": 5}), priority)
    assert (theirs.count, theirs.why) == (3, f"priority {OTHER} at ≤ 3: publishing 3 of 3")
    capped = decide("SKU-1", 3, OTHER, rules_from_wire({"max": 2}), priority)
    assert capped.count == 2  # its own max still caps it
    assert _decide(4, {}, priority=priority).count == 4  # above the threshold: the shop's rules


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"percent": 120}, "percent must be from 0 to 100, got 120"),
        ({"buffer": -1}, "buffer must be a whole number of 0 or more, got -1"),
        ({"max": 1.5}, "max must be a whole number"),
        ({"bufer": 1}, "unknown rule 'bufer'"),
        ({"percent": "50"}, "percent must be a number"),
        ({"skus": {"CASE-*": {"percent": 101}}}, "rules for CASE-*: percent must be from 0"),
        ({"skus": ["CASE-*"]}, "rules.skus must be a table"),
        ({"skus": {"": {}}}, "a SKU or pattern must be 1 to"),
    ],
)
def test_bad_rules_are_refused_with_one_clear_message(raw: dict, message: str) -> None:
    with pytest.raises(RuleError, match=message.replace("*", r"\*")):
        rules_from_wire(raw)


def test_a_priority_shop_must_be_a_member() -> None:
    members = [SHOP, OTHER]
    assert priority_from_wire({"shop": OTHER, "at_most": 2}, members) == Priority(OTHER, 2)
    with pytest.raises(RuleError, match=r"c\.example\.com is not a member"):
        priority_from_wire({"shop": "c.example.com", "at_most": 2}, members)
    with pytest.raises(RuleError, match="at_most must be a whole number"):
        priority_from_wire({"shop": OTHER, "at_most": -1}, members)
    assert priority_from_wire(None) is None


def test_rules_survive_their_wire_form() -> None:
    raw = {"buffer": 2, "percent": 50.0, "plus": 1, "max": 9, "skus": {"X-*": {"max": 1}}}
    assert rules_from_wire(rules_from_wire(raw).to_wire()) == rules_from_wire(raw)
    assert rules_from_wire(raw).default.describe() == "buffer 2, percent 50 + 1, max 9"
    assert ShopRules().default.describe() == "no rule"


@given(
    pool=st.integers(-50, 10_000),
    buffer=st.none() | st.integers(0, 100),
    percent=st.none() | st.integers(0, 100),
    plus=st.none() | st.integers(0, 20),
    cap=st.none() | st.integers(0, 500),
    at_most=st.none() | st.integers(0, 50),
    mine=st.booleans(),
)
def test_no_rule_ever_publishes_more_than_the_pool_or_below_zero(
    pool: int,
    buffer: int | None,
    percent: int | None,
    plus: int | None,
    cap: int | None,
    at_most: int | None,
    mine: bool,
) -> None:
    rules = ShopRules(ShopRule(buffer, None if percent is None else float(percent), plus, cap))
    priority = None if at_most is None else Priority(SHOP if mine else OTHER, at_most)
    decision = decide("SKU-1", pool, SHOP, rules, priority)
    assert 0 <= decision.count <= max(0, pool)
    if cap is not None:
        assert decision.count <= cap
    if decision.count < max(0, pool):  # every unit held back is explained
        assert decision.why.endswith(f"publishing {decision.count} of {pool}")


class _Preorders:
    """A third-party plugin written for the hook's first arguments only."""

    @hookimpl
    def allocate(self, sku: str, pool: int, shop: str) -> int | None:
        return 0 if sku.startswith("PRE-") else None


def test_a_plugins_allocate_decides_first_and_the_rules_decide_the_rest() -> None:
    pm = make_plugin_manager(load_entry_points=False)
    pm.register(_Preorders())
    decide_for = Registry(pm).allocate(SHOP)
    rules = rules_from_wire({"max": 5})
    assert decide_for("PRE-1", 9, rules, None) == Decision(
        0, "a plugin's allocate: publishing 0 of 9"
    )
    assert decide_for("SKU-1", 9, rules, None) == Decision(5, "max 5: publishing 5 of 9")
    assert decide_for("SKU-1", 3, ShopRules(), None) == Decision(3)


def _signed(key: Any, record: RulesRecord) -> RulesRecord:
    return dataclasses.replace(record, proof=trust.sign(key, record.message()))


def test_a_member_sets_only_its_own_rules_or_the_groups() -> None:
    a_key, b_key = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    keys = {SHOP: a_key.public_key(), OTHER: b_key.public_key()}
    now = 1000.0

    def verdict(record: RulesRecord, current: RulesRecord | None = None) -> str | None:
        return judge(record, current, keys, now=now, max_skew=300)

    own = _signed(b_key, RulesRecord(OTHER, {"buffer": 2}, now, OTHER))
    group = _signed(b_key, RulesRecord(GROUP, {"priority": None}, now, OTHER))
    assert verdict(own) is None and verdict(group) is None
    forged = _signed(b_key, RulesRecord(SHOP, {"max": 0}, now, OTHER))
    assert "a shop sets only its own" in (verdict(forged) or "")
    posing = _signed(b_key, RulesRecord(SHOP, {}, now, SHOP))  # b signs as a
    assert "not signed by" in (verdict(posing) or "")
    stranger = _signed(b_key, RulesRecord(GROUP, {}, now, "c.example.com"))
    assert "not a member" in (verdict(stranger) or "")
    future = _signed(b_key, RulesRecord(OTHER, {}, now + 3600, OTHER))
    assert "in the future" in (verdict(future) or "")
    newer = _signed(b_key, RulesRecord(OTHER, {"buffer": 3}, now + 1, OTHER))
    assert verdict(own, current=newer) == f"older than the rules held for {OTHER}"
    assert verdict(newer, current=own) is None
    assert verdict(own, current=own) == ""  # the one held: nothing new
    with pytest.raises(RuleError, match="percent must be from 0 to 100"):
        record_from_wire({**own.to_wire(), "body": {"percent": 300}})
