"""SIGKILL rounds on real processes (issue 6 part 4): no sale lost or counted twice.

Three emulated shops and three agents on loopback form a group. Each round sends purchases
and manual edits to random shops while one random agent is killed with SIGKILL at a random
moment and then restarted; one round also runs an admin import (`POST /api/import`) on the
agent that is killed. After the rounds the system goes quiet and the checker compares every
shop's count and every agent's pool with what the accepted operations imply.

Run longer by hand: `python -m tests.test_kill9 --rounds 200 [--seed S] [--skus N]`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.cluster import Cluster, ShopHandle


@dataclass
class Ledger:
    """What the accepted operations imply: per SKU, the sum of their deltas."""

    deltas: Counter[str] = field(default_factory=Counter)
    purchases: int = 0
    refused: int = 0
    edits: int = 0

    def expected(self, initial: dict[str, int]) -> dict[str, int]:
        return {sku: count + self.deltas[sku] for sku, count in initial.items()}


async def _purchase(shop: ShopHandle, sku: str, quantity: int, ledger: Ledger) -> None:
    if await shop.buy(sku, quantity):  # 201: the platform took the order
        ledger.deltas[sku] -= quantity
        ledger.purchases += 1
    else:  # 409: not enough stock in that shop at that moment; nothing moved
        ledger.refused += 1


async def _edit(shop: ShopHandle, sku: str, value: int, ledger: Ledger) -> None:
    status, answer = await shop.emu(
        "POST", "/_emulator/inventory", {"sku": sku, "available": value}
    )
    assert status == 200, answer
    # an edit sets a count: for the group it is the change from what the shop had just then
    ledger.deltas[sku] += answer["available"] - answer["before"]
    ledger.edits += 1


async def _round(
    cluster: Cluster,
    rng: random.Random,
    skus: list[str],
    ledger: Ledger,
    *,
    importing: bool,
) -> str:
    """One round of trading with one agent SIGKILLed and restarted; returns what happened."""
    victim = rng.choice(cluster.shops)
    # During an import a sale at the importing shop before its SKU's cut-over write belongs
    # to the old stock (README "Joining shops"): this round trades at the other shops only.
    traders = [s for s in cluster.shops if s is not victim] if importing else cluster.shops
    if importing:
        # An import overwrites the shop's counts: a sale there not yet recorded as an event
        # would be taken for old stock. Let every earlier change be recorded first.
        await cluster.wait_idle(timeout=120)
        status, answer = await victim.api("POST", "/api/import", {})
        assert status == 202, answer
    ops = []
    for _ in range(rng.randrange(8, 16)):
        shop, sku, at = rng.choice(traders), rng.choice(skus), rng.uniform(0, 0.6)
        if rng.random() < 0.8:
            ops.append((at, _purchase(shop, sku, rng.randint(1, 2), ledger)))
        else:
            ops.append((at, _edit(shop, sku, rng.randrange(60, 160), ledger)))

    async def later(at: float, coro) -> None:  # type: ignore[no-untyped-def]
        await asyncio.sleep(at)
        await coro

    kill_at = rng.uniform(0, 0.7)
    await asyncio.gather(
        later(kill_at, victim.kill_agent()), *(later(at, coro) for at, coro in ops)
    )
    await victim.start_agent()
    if importing:  # a killed import resumes where it stopped
        await cluster.until(
            lambda: _import_done(victim), timeout=60, what=f"{victim.domain} import resumed"
        )
    return f"killed {victim.domain} at {kill_at:.2f}s{' during an import' if importing else ''}"


async def _import_done(shop: ShopHandle) -> bool:
    return (await shop.get("/api/status"))["import"]["state"] == "done"


async def run_rounds(workdir: Path, *, rounds: int, seed: int, skus: int = 10) -> dict:
    """Form the group, play `rounds` kill-9 rounds, wait for quiet, check; return figures."""
    rng = random.Random(seed)
    started = time.monotonic()
    async with Cluster(workdir, 3, skus=skus) as cluster:
        a, b, c = cluster.shops
        await cluster.join(b, a)
        await cluster.join(c, b)
        await cluster.wait_idle()
        initial = await cluster.converged()
        # joiners hold the master's history as a snapshot, not as events: count from here
        base = [(await s.get("/api/status"))["events"] for s in cluster.shops]
        names = sorted(initial)
        ledger = Ledger()
        import_round = rng.randrange(rounds)
        formed = time.monotonic()
        for n in range(rounds):
            await _round(cluster, rng, names, ledger, importing=n == import_round)
        played = time.monotonic()
        await cluster.wait_idle(timeout=120)
        final = await cluster.converged(timeout=120)
        expected = ledger.expected(initial)
        assert final == expected, {
            s: (final.get(s), expected[s]) for s in names if final.get(s) != expected[s]
        }
        for shop in cluster.shops:
            counts = await shop.inventory()
            assert {s: counts[s] for s in names} == {s: max(0, v) for s, v in expected.items()}
        statuses = [await s.get("/api/status") for s in cluster.shops]
        # the same events everywhere, each held once: equal vectors, and every agent holds
        # the same number of events made since the group formed
        new = [st["events"] - n for st, n in zip(statuses, base, strict=True)]
        assert all(st["vector"] == statuses[0]["vector"] for st in statuses), statuses
        assert len(set(new)) == 1, new
    return {
        "seed": seed,
        "rounds": rounds,
        "purchases": ledger.purchases,
        "refused": ledger.refused,
        "edits": ledger.edits,
        "events": new[0],
        "setup_s": round(formed - started, 1),
        "rounds_s": round(played - formed, 1),
        "settle_s": round(time.monotonic() - played, 1),
    }


def _seed() -> int:
    raw = os.environ.get("SHOPSYNC_KILL9_SEED")
    return int(raw) if raw else random.randrange(2**32)


@pytest.mark.slow
async def test_twenty_kill9_rounds_lose_and_double_nothing(tmp_path: Path) -> None:
    seed = _seed()
    try:
        figures = await run_rounds(tmp_path, rounds=20, seed=seed)
    except BaseException:
        print(
            f"kill-9 rounds failed with seed {seed}: replay with "
            f"SHOPSYNC_KILL9_SEED={seed} or python -m tests.test_kill9 --seed {seed}"
        )
        raise
    print(figures)


def main(argv: list[str] | None = None) -> int:
    """`python -m tests.test_kill9 --rounds N [--seed S] [--skus K]`."""
    parser = argparse.ArgumentParser(prog="python -m tests.test_kill9")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--skus", type=int, default=10)
    args = parser.parse_args(argv)
    seed = _seed() if args.seed is None else args.seed
    with tempfile.TemporaryDirectory(prefix="kill9-") as workdir:
        try:
            figures = asyncio.run(
                run_rounds(Path(workdir), rounds=args.rounds, seed=seed, skus=args.skus)
            )
        except AssertionError as exc:
            print(
                f"FAILED seed {seed}: {exc}\nreplay: python -m tests.test_kill9 "
                f"--rounds {args.rounds} --seed {seed} --skus {args.skus}"
            )
            return 1
    print(figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
