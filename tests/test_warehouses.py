"""Warehouses (`agent.warehouses`): keys, a shop's location links, and what a location shows
and what a change seen at one does to the warehouses' counts."""

from __future__ import annotations

import pytest

from agent.warehouses import DEFAULT, LocationMap, WarehouseError, parse_key, stock_key

SHOP, ANNEX, POPUP = "gid://shopify/Location/1", "gid://shopify/Location/2", "popup"


def _counts(**by_warehouse: int | None):  # type: ignore[no-untyped-def]
    held = {stock_key("TEA", w): c for w, c in by_warehouse.items()}
    return lambda key: held.get(key)


def test_the_default_warehouse_keys_are_the_bare_skus() -> None:
    assert stock_key("TEA") == stock_key("TEA", DEFAULT) == "TEA"
    assert stock_key("TEA", "east") == "TEA@@east"
    assert parse_key("TEA@@east") == ("TEA", "east")
    assert parse_key("TEA") == ("TEA", DEFAULT)
    assert parse_key("TEA@@") == ("TEA@@", DEFAULT)


def test_by_default_only_the_primary_location_syncs_from_the_default_warehouse() -> None:
    links = LocationMap(SHOP)
    assert links.keys(SHOP, "TEA") == ["TEA"]
    assert not links.synced(ANNEX) and links.keys(ANNEX, "TEA") == []
    assert links.publish(ANNEX, "TEA", _counts(main=5), lambda n: n) is None


@pytest.mark.parametrize(
    ("links", "says"),
    [
        ({ANNEX: []}, "at least"),
        ({ANNEX: ["east", "east"]}, "twice"),
        ({ANNEX: ["east wing"]}, "no warehouse name"),
        ({ANNEX: ["-east"]}, "no warehouse name"),
        ({ANNEX: [3]}, "no warehouse name"),
        ({"": ["east"]}, "must be named"),
    ],
)
def test_malformed_links_say_what_is_wrong(links: dict, says: str) -> None:
    with pytest.raises(WarehouseError, match=says):
        LocationMap(SHOP, links)


def test_a_location_shows_the_sum_of_its_warehouses_with_the_rules_applied_once() -> None:
    links = LocationMap(SHOP, {ANNEX: ["east", DEFAULT]})
    buffer_of_2 = lambda n: max(0, n - 2)  # noqa: E731 - the shop's rules, as `decide`
    assert links.publish(ANNEX, "TEA", _counts(east=5, main=4), buffer_of_2) == 7
    assert links.publish(ANNEX, "TEA", _counts(main=4), buffer_of_2) == 2  # east counts none
    assert links.publish(SHOP, "TEA", _counts(east=5, main=4), buffer_of_2) == 2
    assert links.publish(ANNEX, "TEA", _counts(), buffer_of_2) is None


def test_a_sale_takes_from_the_warehouses_in_order_and_the_first_goes_below_zero() -> None:
    links = LocationMap(SHOP, {ANNEX: ["east", "west"]})
    east, west = stock_key("TEA", "east"), stock_key("TEA", "west")
    order = "orders/create #1001"
    assert links.taken(ANNEX, "TEA", -2, order, _counts(east=5, west=5)).changes == ((east, -2),)
    assert links.taken(ANNEX, "TEA", -7, order, _counts(east=5, west=5)).changes == (
        (east, -5),
        (west, -2),
    )
    assert links.taken(ANNEX, "TEA", -3, order, _counts(east=0, west=2)).changes == (
        (east, -1),  # what west lacks, from the first (the changes in the warehouses' order)
        (west, -2),
    )
    assert links.taken(ANNEX, "TEA", -12, order, _counts(east=5, west=5)).changes == (
        (east, -7),  # oversold: two more than both hold, from the first
        (west, -5),
    )
    assert links.taken(ANNEX, "TEA", -1, order, _counts(east=None, west=None)).changes == (
        (east, -1),
    )


def test_stock_back_goes_to_the_first_warehouse_and_an_edit_there_is_refused() -> None:
    links = LocationMap(SHOP, {ANNEX: ["east", "west"], POPUP: ["west"]})
    east, west = stock_key("TEA", "east"), stock_key("TEA", "west")
    counts = _counts(east=5, west=5)
    refund = links.taken(ANNEX, "TEA", 2, "refunds/create 450789469", counts)
    assert refund.changes == ((east, 2),) and not refund.refused
    edit = links.taken(ANNEX, "TEA", 4, "inventory_levels/update", counts)
    assert edit.changes == ()
    assert "several warehouses (east, west)" in edit.refused and f"link {ANNEX}" in edit.refused
    # a location linked to one warehouse: an edit there is that warehouse's, either way
    assert links.taken(POPUP, "TEA", 4, "inventory_levels/update", counts).changes == ((west, 4),)
    assert links.taken(POPUP, "TEA", -4, "inventory_levels/update", counts).changes == ((west, -4),)
    assert links.taken(SHOP, "TEA", 3, "inventory_levels/update", counts).changes == (("TEA", 3),)
    assert links.taken(ANNEX, "TEA", 0, "read", counts) == links.taken(
        "elsewhere", "TEA", 5, "read", counts
    )
