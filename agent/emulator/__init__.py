"""Shared machinery of the platform emulators: stock store, rate bucket, webhooks, control API.

Platform plugins import this kit for their emulators (like the channel contract, it knows no
platform); each keeps only its platform's wire format.
"""

from __future__ import annotations

from agent.emulator.base import Emulator, json_error
from agent.emulator.bucket import LeakyBucket
from agent.emulator.options import EmulatorOptions, Faults
from agent.emulator.store import (
    PRIMARY,
    NotStocked,
    ShortStock,
    Store,
    UnknownSku,
    Variant,
    WriteRecord,
)
from agent.emulator.webhooks import Delivery, Subscription, WebhookSender

__all__ = [
    "PRIMARY",
    "Delivery",
    "NotStocked",
    "Emulator",
    "EmulatorOptions",
    "Faults",
    "LeakyBucket",
    "ShortStock",
    "Store",
    "Subscription",
    "UnknownSku",
    "Variant",
    "WebhookSender",
    "WriteRecord",
    "json_error",
]
