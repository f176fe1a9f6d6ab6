"""Compaction with real agent and emulator processes: history every member holds is folded
away, a member out of touch for longer than the history horizon stops holding it back, and
when that member returns it re-imports the group's counts, keeping the sales its shop made
while its agent was down."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.support.cluster import Cluster, ShopHandle


async def _reconfigure(shop: ShopHandle, **settings: str) -> None:
    """Restart `shop`'s agent with `settings` changed in its shopsync.toml."""
    await shop.stop_agent()
    config = shop.data_dir / "shopsync.toml"
    text = config.read_text()
    for name, value in settings.items():
        default = {"compaction_interval": "60.0", "history_horizon_days": "7.0"}[name]
        assert f"{name} = {default}" in text  # what `shopsync init` wrote
        text = text.replace(f"{name} = {default}", f"{name} = {value}")
    config.write_text(text)
    await shop.start_agent()


async def _log(shop: ShopHandle, kind: str) -> list[dict[str, Any]]:
    return list((await shop.get(f"/api/log?kind={kind}&limit=50"))["entries"])


async def test_a_member_away_past_the_horizon_re_imports_and_keeps_its_own_sales(
    tmp_path: Path,
) -> None:
    async with Cluster(tmp_path, 3, skus=4) as cluster:
        a, b, c = cluster.shops
        await cluster.join(b, a)
        await cluster.join(c, a)
        await cluster.converged()
        await c.stop_agent()  # c's agent is down; its shop still sells
        # a horizon of 5 seconds (0.00006 days), compaction every second
        for shop in (a, b):
            await _reconfigure(shop, compaction_interval="1", history_horizon_days="0.00006")
        assert await a.buy("SKU-00001", 3)
        assert await b.buy("SKU-00002", 2)
        assert await c.buy("SKU-00003", 4)  # while c's agent is down
        await cluster.until(lambda: _away(a, c.domain), what="a to leave c out", timeout=60)
        await cluster.until(lambda: _folded_all(a), what="a to fold its history", timeout=30)
        await c.start_agent()
        counts = await cluster.converged(timeout=90)
        assert counts == {"SKU-00001": 97, "SKU-00002": 98, "SKU-00003": 96, "SKU-00004": 100}
        for shop in cluster.shops:
            assert await shop.inventory() == counts
        folded = await _log(c, "history_folded")
        assert len(folded) == 1, folded
        assert "re-importing the group's counts" in folded[0]["message"]
        imported = [e["message"] for e in await _log(c, "import")]
        assert any(m.startswith("re-imported: ") for m in imported), imported
        # once back, c holds compaction back again like any member, and nothing is lost
        assert await c.buy("SKU-00004", 1)
        counts = await cluster.converged(timeout=60)
        assert counts["SKU-00004"] == 99


async def _away(shop: ShopHandle, member: str) -> bool:
    return any(e["peer"] == member for e in await _log(shop, "member_away"))


async def _folded_all(shop: ShopHandle) -> bool:
    status = await shop.get("/api/status")
    return bool(status["events"] == 0 and status["compacted"] > 0)
