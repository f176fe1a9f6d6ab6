"""Test support: a memory channel, process helpers."""
