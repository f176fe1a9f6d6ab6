"""A change's cause in the owner's words, and the order it names (`agent.causes`)."""

from __future__ import annotations

import pytest

from agent.causes import cause_of, in_words, logged, prefer


@pytest.mark.parametrize(
    ("cause", "words"),
    [
        ("orders/create #1042", "order #1042"),
        ("orders/create", "an order"),
        ("orders/cancelled #1042", "cancelled order #1042"),
        ("refunds/create 450789469", "refund of order 450789469"),
        ("refunds/create", "a refund"),
        ("order.imported 9", "order 9"),
        ("inventory_levels/update", "a stock edit (in the shop's admin, or by an app)"),
        ("products/update", "a product created or changed"),
        ("during write", "a sale while the agent was writing the count"),
        ("write conflict", "a change in the shop just before the agent wrote the count"),
        ("retried write", "found on a re-read after a write whose answer was lost"),
        ("read", "found by a full pass over the shop (no webhook told of it)"),
        ("something else", "something else"),
    ],
)
def test_a_cause_in_words(cause: str, words: str) -> None:
    assert in_words(cause) == words


def test_a_change_row_says_the_words_and_the_platforms_topic() -> None:
    assert logged("orders/create #7") == "order #7 (orders/create)"
    assert logged("order.imported 9") == "order 9 (order.imported)"
    assert logged("read") == "found by a full pass over the shop (no webhook told of it)"


def test_a_platforms_order_name_is_cleaned_and_cut() -> None:
    assert cause_of("orders/create", " #1042 ") == "orders/create #1042"
    assert cause_of("orders/create", "a b\n<script>") == "orders/create a_b_script_"
    assert cause_of("orders/create", "x" * 500) == "orders/create " + "x" * 64
    assert cause_of("orders/create", "  ") == "orders/create"


def test_the_cause_that_names_an_order_is_kept() -> None:
    assert prefer(None, "inventory_levels/update") == "inventory_levels/update"
    assert prefer("inventory_levels/update", "orders/create #1") == "orders/create #1"
    assert prefer("orders/create #1", "inventory_levels/update") == "orders/create #1"
    assert prefer("orders/create #1", "orders/create #2") == "orders/create #1"
