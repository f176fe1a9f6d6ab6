"""An event's cause: what the agent was told or found, kept in the event and said in words.

A cause is the platform webhook's topic, or how the agent found the change ("read",
"reconcile", "during write"), followed by the order the webhook names when it names one
(`WebhookHint.reference`): ``orders/create #1042``. The cause travels inside the signed event,
so every member's sync log can say "order #1042 at shop2" of a change made elsewhere.
"""

from __future__ import annotations

import re

__all__ = ["MAX_REFERENCE", "cause_of", "in_words", "logged", "prefer", "reference_of"]

MAX_REFERENCE = 64
_UNSAFE = re.compile(r"[^\w#.\-/:]+")


def cause_of(topic: str, reference: str = "") -> str:
    """The cause of a change a webhook of `topic` told of, naming its order when it has one.

    The reference is the platform's (an order's name or id), so it is cleaned: what is not a
    word character or ``#.-/:`` becomes ``_``, and it is cut to `MAX_REFERENCE` characters.
    """
    cleaned = _UNSAFE.sub("_", reference.strip())[:MAX_REFERENCE]
    return f"{topic} {cleaned}" if cleaned else topic


def reference_of(cause: str) -> str:
    """The order a cause names ("" when none)."""
    _, _, reference = cause.partition(" ")
    return reference


def prefer(queued: str | None, new: str) -> str:
    """The cause to keep for an item told of twice before it is read: the first one that names
    an order (a sale's inventory webhook and its order webhook arrive in either order)."""
    if queued is None or (not reference_of(queued) and reference_of(new)):
        return new
    return queued


def in_words(cause: str) -> str:
    """An event's cause as an owner would say it: "order #1042", "refund of order 450789469",
    "a stock edit (in the shop's admin, or by an app)"."""
    topic, _, reference = cause.partition(" ")
    words = topic.lower()
    order = f"order {reference}" if reference else "an order"
    if "refund" in words:
        return f"refund of {order}" if reference else "a refund"
    if "order" in words and ("cancel" in words or "delete" in words):
        return f"cancelled {order}" if reference else "a cancelled order"
    if "order" in words:
        return order
    if "inventory" in words or "stock" in words:
        return "a stock edit (in the shop's admin, or by an app)"
    if "product" in words:
        return "a product created or changed"
    if cause == "during write":
        return "a sale while the agent was writing the count"
    if cause == "write conflict":
        return "a change in the shop just before the agent wrote the count"
    if cause == "retried write":
        return "found on a re-read after a write whose answer was lost"
    if cause == "while_out":
        return "changes made while out of the group, counted on joining again"
    if words in ("read", "reconcile", "resync", ""):
        return "found by a full pass over the shop (no webhook told of it)"
    return cause


def logged(cause: str) -> str:
    """A `change` row's message: the cause in words, with the platform's topic it came from
    ("order #1042 (orders/create)"); the agent's own causes in words alone."""
    words = in_words(cause)
    topic = cause.partition(" ")[0]
    return f"{words} ({topic})" if words != cause and ("/" in topic or "." in topic) else words
