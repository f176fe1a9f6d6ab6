"""Proofs of origin and authority: what each signature in the group says, and the limits.

A signed request proves who sent it, not that the sender may say what it says. So the things
a member says about others travel with the signature of the one they are about:
- an **event** is signed by its origin (`event_message`): any member may forward it, none may
  forge it, and a receiver checks it against the member list;
- an **admission** — "member M admits shop D, at URL U, with key K, at time T" — is signed by
  the accepting member M; only with it does a new member enter anybody's list;
- a **statement** — "I, D, at URL U with key K, am active/paused/left since T" — is signed by
  D itself; only with it do a member's URL and state change;
- **rules**: a shop's own stock rules are signed by that shop; the group's rule ("while a pool
  is N or less only shop P publishes it", or none) by the member whose admin set it; the
  newest (time, then domain) wins everywhere;
- a **welcome confirmation** is signed by the joiner: it proves the answer to the master's
  callback comes from the key that asked to join.
Every message starts with its own context line, so a signature made for one kind can never be
taken for another. This module is pure: bytes in, bytes out, no I/O.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from cryptography.exceptions import InvalidSignature

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

    from agent.models import EventRow

__all__ = [
    "MAX_CAUSE",
    "MAX_DOMAIN",
    "MAX_EPOCH",
    "MAX_KIND",
    "MAX_SKU",
    "MAX_URL",
    "admission_message",
    "check_agent_url",
    "check_domain",
    "event_message",
    "rules_message",
    "sign",
    "sign_event",
    "signed_by",
    "statement_message",
    "welcome_message",
]

MAX_DOMAIN = 253  # RFC 1123 / DNS
MAX_URL = 512
MAX_SKU = 255  # Shopify's and SHOPLINE's SKU fields hold 255 characters
MAX_KIND = 32
MAX_EPOCH = 64
MAX_CAUSE = 200

_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")


def check_domain(value: Any, what: str = "domain") -> str:
    """A shop domain as RFC 1123 spells a host name (letters, digits, hyphens in any case; dots
    between labels of 1-63; at most 253), returned as given; ValueError says what is wrong."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must be a non-empty string")
    if len(value) > MAX_DOMAIN:
        raise ValueError(f"{what} is {len(value)} characters; a domain has at most {MAX_DOMAIN}")
    if not all(_LABEL.fullmatch(label) for label in value.lower().split(".")):
        raise ValueError(
            f"{what} {value[:80]!r} is not a host name (letters, digits and hyphens, "
            "dot-separated labels of 1-63)"
        )
    return value


def check_agent_url(value: Any, what: str = "agent_url") -> str:
    """An agent URL: http(s), a host, no user info, query or fragment, at most 512 characters;
    returned without a trailing slash. ValueError says what is wrong."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must be a non-empty string")
    if len(value) > MAX_URL:
        raise ValueError(f"{what} is {len(value)} characters; at most {MAX_URL}")
    if not value.isascii() or not value.isprintable() or " " in value:
        raise ValueError(f"{what} must be printable ASCII without spaces")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise ValueError(f"{what} {value[:80]!r} is not a URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{what} must be an http(s) URL with a host, got {value[:80]!r}")
    if parts.username is not None or parts.query or parts.fragment:
        raise ValueError(f"{what} must carry no user, query or fragment")
    return value.rstrip("/")


def _finite(value: float | None) -> float | None:
    if value is None:
        return None
    value = float(value)
    if not math.isfinite(value):
        raise ValueError("a time must be a finite number")
    return value


def _message(context: str, fields: list[Any]) -> bytes:
    # JSON of a flat list of strings, ints and floats: one spelling per value in Python.
    body = json.dumps(fields, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return f"shopsync {context} v1\n{body}".encode()


def event_message(event: EventRow) -> bytes:
    """What an event's origin signs: every field that is the change, as stored."""
    return _message(
        "event",
        [
            event.origin,
            event.epoch,
            event.seq,
            event.sku,
            event.kind,
            event.delta,
            event.count,
            _finite(event.item_created),
            event.cause,
            _finite(event.at),
        ],
    )


def admission_message(
    domain: str, agent_url: str, public_key: str, admitted_at: float, admitted_by: str
) -> bytes:
    """What an accepting member signs when it admits a shop into the group."""
    return _message("admission", [domain, agent_url, public_key, _finite(admitted_at), admitted_by])


def statement_message(
    domain: str, agent_url: str, public_key: str, state: str, changed_at: float
) -> bytes:
    """What a member signs about itself: where it is, its key, and its state since when."""
    return _message("statement", [domain, agent_url, public_key, state, _finite(changed_at)])


def rules_message(subject: str, body: Any, changed_at: float, changed_by: str) -> bytes:
    """What a member signs when its admin sets rules: its own shop's (`subject` its domain) or
    the group's (`subject` "group"); `body` is their JSON, spelled with sorted keys."""
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return _message("rules", [subject, text, _finite(changed_at), changed_by])


def welcome_message(nonce: str, master_key_id: str, domain: str, public_key: str) -> bytes:
    """What a joiner signs to confirm the master's welcome (the nonce of its own request)."""
    return _message("welcome", [nonce, master_key_id, domain, public_key])


def sign_event(key: Ed25519PrivateKey, event: EventRow) -> str:
    """The proof an origin stores and sends with its own event."""
    return sign(key, event_message(event))


def sign(key: Ed25519PrivateKey, message: bytes) -> str:
    """A detached Ed25519 signature, standard base64."""
    return base64.b64encode(key.sign(message)).decode("ascii")


def signed_by(key: Ed25519PublicKey, message: bytes, signature: Any) -> bool:
    """Whether `signature` (base64, as `sign` makes it) is `key`'s over `message`."""
    if not isinstance(signature, str) or len(signature) != 88:  # 64 bytes in base64
        return False
    try:
        raw = base64.b64decode(signature, validate=True)
        key.verify(raw, message)
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True
