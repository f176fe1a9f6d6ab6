"""Deterministic simulation of a shopsync group: real core, virtual time, faults from a seed.

`python -m tests.sim --help`; `tests/test_sim.py` runs a few hundred seeds in `make test`.
"""
