"""What every emulator is started with: `shopsync emulator CHANNEL --port P --shop D --skus N`."""

from __future__ import annotations

import dataclasses
import math

__all__ = ["EmulatorOptions", "Faults"]


@dataclasses.dataclass(slots=True)
class Faults:
    """Injectable misbehaviour, settable at start (flags) or live (`POST /_emulator/faults`).

    Webhook faults: each delivery is delayed by up to `webhook_delay` seconds, duplicated with
    probability `webhook_duplicate`, lost (never delivered, no retry) with probability
    `webhook_drop`, and, with `webhook_reorder`, sent in shuffled order within a batch.
    API faults: the next `fail_requests` platform API calls answer `fail_status`; the next
    `timeout_after_apply` writes are applied and then the connection is dropped, so the client
    never learns the outcome; every platform API answer waits `api_delay` seconds (a slow
    platform; the `/_emulator` control API is never slowed). Platform behaviour, on by default
    as the platform has it: after `webhook_delete_after` deliveries to a subscription failed
    every retry (a success resets the count), the subscription is deleted, as Shopify does
    after one (8 tries over 4 h) and SHOPLINE after one (19 over 48 h); None takes the
    platform's figure (`Emulator.webhook_delete_after`), 0 keeps it forever. Up to
    `webhook_parallel` deliveries are in flight at once, as the platforms send them (Shopify
    documents out-of-order delivery): two webhooks queued together may land in either order.
    1 sends them one at a time, in the order they were made.
    """

    webhook_delay: float = 0.0
    webhook_duplicate: float = 0.0
    webhook_drop: float = 0.0
    webhook_reorder: bool = False
    fail_requests: int = 0
    fail_status: int = 503
    timeout_after_apply: int = 0
    api_delay: float = 0.0
    webhook_delete_after: int | None = None
    webhook_parallel: int = 8

    def update(self, values: dict[str, object]) -> None:
        """Set the named fields, all or none: unknown names or wrong types raise ValueError
        before anything is set."""
        fields = {f.name: f for f in dataclasses.fields(self)}
        for name, value in values.items():
            if name not in fields:
                raise ValueError(f"unknown fault {name!r} (known: {', '.join(sorted(fields))})")
            current = getattr(self, name)
            if isinstance(current, bool):
                if not isinstance(value, bool):
                    raise ValueError(f"fault {name} must be true or false")
            elif isinstance(current, int):
                if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                    raise ValueError(f"fault {name} must be a non-negative integer")
            elif (
                not isinstance(value, int | float)
                or isinstance(value, bool)
                or not math.isfinite(value)  # JSON's NaN and Infinity parse as floats
                or value < 0
            ):
                raise ValueError(f"fault {name} must be a non-negative number")
        for name, value in values.items():
            setattr(self, name, value)


@dataclasses.dataclass(slots=True)
class EmulatorOptions:
    """Start-up options shared by every platform emulator."""

    shop: str = "demo.example.com"
    skus: int = 10
    token: str = "emulator-token"
    webhook_secret: str = "emulator-secret"
    # The app's id for token grants (client credentials, refresh); its secret is
    # `webhook_secret`, since both platforms sign webhooks with the app's client secret.
    client_id: str = "emulator-client-id"
    # Lifetime of granted tokens in seconds; None: the platform's (Shopify 24 h, SHOPLINE 10 h).
    token_lifetime: float | None = None
    # Locations the shop has, 1 (the primary, which stocks every variant) to `locations`; the
    # others stock nothing until an edit there stocks a SKU (Shopify: their names sort before
    # the primary's, as a shop's warehouses often do).
    locations: int = 1
    plan: str = "standard"
    # The access scopes the app was granted, comma-separated; None: all that shopsync needs.
    scopes: str | None = None
    initial_available: int = 100
    rate_limit: bool = True
    seed: int | None = None
    faults: Faults = dataclasses.field(default_factory=Faults)
