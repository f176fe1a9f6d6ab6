"""The conformance suite's checks of a channel that syncs several locations of its shop.

They hold every channel that sets `Channel.multi_location` to the contract of
`Channel.locations` (see `agent.channel.Item`): one item per (variant, location stocking it),
named as the merchant wrote the location, with ids of its own that `read`, `read_levels` and
`write` take, and a `start()` that refuses a location the shop lacks (or its own). A channel
that leaves `multi_location` False is not asked: the core refuses it a `[locations]` table.
The checks run on an emulator with extra locations (the kit's 2, 3...), which the harness
names as its platform does (`ShopUnderTest.location`: the harness's `location_id`, else the
emulator's `GET /_emulator/locations/{n}`).
"""

from __future__ import annotations

from agent.channel import ChannelError, Write
from agent.testing.counting import CountingModel
from agent.testing.harness import ChannelHarness, run

__all__ = ["LocationConformance"]

# A location number no emulated shop of these checks has (they start with 2 or 3).
ABSENT = 42


def _multi(h: ChannelHarness) -> bool:
    """Whether the channel syncs several locations (else it is not asked to)."""
    return h.channel_class().multi_location


class LocationConformance:
    """The checks of `Channel.locations`, part of `ChannelConformance`."""

    def test_a_location_lists_the_items_it_stocks_under_ids_of_their_own(
        self, channel_under_test: ChannelHarness
    ) -> None:
        multi = _multi(channel_under_test)

        async def scenario(h: ChannelHarness) -> None:
            async with h.open(skus=3, locations=3 if multi else 1) as shop:
                first, second, third = sorted(await shop.inventory())
                if multi:
                    await shop.edit(first, 6, location=2)  # stocked at 2 and 3 from here on
                    await shop.edit(second, 4, location=3)
                own = [item async for item in shop.channel.list_items()]
                elsewhere = [(i.sku, i.location) for i in own if i.location != ""]
                assert not elsewhere, (
                    f"a channel without locations listed items elsewhere than at its own "
                    f"location (''): {elsewhere}"
                )
                assert len(own) == 3, f"without locations, {len(own)} items were listed, not 3"
                if not multi:
                    return  # a single-location channel: nothing more is asked of it
                at2, at3 = await shop.location(2), await shop.location(3)
                channel = await shop.make_channel(locations=(at2, at3))
                items = [item async for item in channel.list_items()]
                held = {
                    "": await shop.inventory(),
                    at2: await shop.inventory(2),
                    at3: await shop.inventory(3),
                }
            listed = sorted((i.sku or "", i.location) for i in items)
            expected = sorted([(first, ""), (second, ""), (third, ""), (first, at2), (second, at3)])
            assert listed == expected, (
                f"with locations {(at2, at3)}, the listing's (sku, location) pairs are "
                f"{listed}, not {expected} (one item per variant and location stocking it, "
                f"`location` exactly as given, '' at the own location)"
            )
            ids = [i.item_id for i in items]
            assert len(set(ids)) == len(ids), f"an item id was listed twice: {sorted(ids)}"
            wrong = {
                (i.sku, i.location): i.available
                for i in items
                if i.available != held[i.location].get(i.sku or "")
            }
            assert not wrong, f"listed counts differ from the locations' counts: {wrong}"
            mine = {i.sku: i.item_id for i in items if i.location == ""}
            before = {i.sku: i.item_id for i in own}
            assert mine == before, (
                f"with locations, the own location's item ids changed: {mine}, not {before}"
            )

        run(scenario, channel_under_test)

    def test_reads_and_writes_at_a_location_land_at_that_location_only(
        self, channel_under_test: ChannelHarness
    ) -> None:
        if not _multi(channel_under_test):
            return  # a single-location channel is never given another location's ids

        async def scenario(h: ChannelHarness) -> None:
            async with h.open(skus=3, locations=2) as shop:
                sku = sorted(await shop.inventory())[0]
                await shop.edit(sku, 6, location=2)
                at2 = await shop.location(2)
                channel = await shop.make_channel(locations=(at2,))
                listed = {(i.sku, i.location): i async for i in channel.list_items()}
                there, own = listed.get((sku, at2)), listed.get((sku, ""))
                assert there is not None and own is not None, (
                    f"{sku} is not listed both at '' and at {at2!r}: {sorted(listed)}"
                )
                await shop.edit(sku, 9, location=2)  # after the listing: only a read sees it
                primary = (await shop.inventory())[sku]
                counts = await channel.read([there.item_id, own.item_id])
                levels = await channel.read_levels([there.item_id])
                [result] = await channel.write(
                    [Write(there.item_id, 9, 5)], key="conformance-location-write"
                )
                landed = {
                    "there": (await shop.inventory(2))[sku],
                    "own": (await shop.inventory())[sku],
                }
                # Compare-and-set there, under a sale there: counted as the core would count.
                books = await CountingModel.start(channel, there.item_id)
                books.remote(-1)  # another shop sold one: publish 4
                await shop.order(sku, 2, location=2)  # meanwhile this location sells two
                await books.publish()
                await books.observe()
                held = (await shop.inventory(2))[sku]
                untouched = (await shop.inventory())[sku]
            expected = {there.item_id: 9, own.item_id: primary}
            assert counts == expected, f"read() at {at2!r} gave {counts}, not {expected}"
            level = levels.get(there.item_id)
            assert level is not None and level.count == 9, (
                f"read_levels() at {at2!r} gave {level}, not a count of 9"
            )
            assert landed == {"there": 5, "own": primary}, (
                f"a write of 9 -> 5 at {at2!r} left {landed}, not "
                f"{{'there': 5, 'own': {primary}}}: it must land at that location only"
            )
            assert result.status == "ok", f"a write at {at2!r} got {result}"
            assert books.counted == -2, (
                f"a sale of 2 at {at2!r} was counted as {-books.counted} (answers: {books.results})"
            )
            assert held == 5 - 3 == books.pool, (
                f"location {at2!r} holds {held}, the books say {books.pool}, the truth is 2"
            )
            assert untouched == primary, (
                f"writes at {at2!r} moved the own location from {primary} to {untouched}"
            )

        run(scenario, channel_under_test)

    def test_a_location_the_shop_lacks_is_refused_at_start(
        self, channel_under_test: ChannelHarness
    ) -> None:
        if not _multi(channel_under_test):
            return  # the core, not the channel, refuses locations to a single-location one

        async def scenario(h: ChannelHarness) -> None:
            async with h.open(skus=1, locations=2) as shop:
                at2 = await shop.location(2)
                cases = (
                    (await shop.location(ABSENT), "a location the shop lacks", True),
                    (await shop.location(1), "the channel's own location", False),
                )
                for entry, what, named in cases:
                    try:
                        await shop.make_channel(locations=(at2, entry))
                    except ChannelError as exc:
                        assert not named or entry in str(exc), (
                            f"start() refused {what} ({entry!r}) without naming it: {exc}"
                        )
                    except Exception as exc:
                        raise AssertionError(
                            f"start() with {what} ({entry!r}) raised {exc!r}, not ChannelError"
                        ) from exc
                    else:
                        raise AssertionError(f"start() accepted {what} ({entry!r}) as a location")

        run(scenario, channel_under_test)
