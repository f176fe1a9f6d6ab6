"""The sync mode: every transition, what each mode answers peers, what survives a restart."""

from __future__ import annotations

from agent.db import Database
from agent.syncmode import IMPORTING, MAINTENANCE, PAUSED, RUNNING, SyncMode


async def _mode(database: Database) -> tuple[SyncMode, list[str]]:
    mode = SyncMode(database)
    await mode.load()
    released: list[str] = []
    mode.on_release(lambda: released.append(mode.name))
    return mode, released


async def test_a_new_agent_runs(database: Database) -> None:
    mode, _ = await _mode(database)
    assert mode.name == RUNNING
    assert mode.exchanging and mode.sending_own and not mode.held_back
    assert mode.refusal() is None


async def test_pause_refuses_peers_and_survives_a_restart(database: Database) -> None:
    mode, released = await _mode(database)
    await mode.set_paused(True)
    assert mode.name == PAUSED
    assert not mode.exchanging and not mode.sending_own
    assert mode.refusal() == ("paused", "sync is paused at this shop; try again later")
    again, _ = await _mode(database)  # a restart
    assert again.name == PAUSED
    await again.set_paused(False)
    assert again.name == RUNNING and released == []  # the first agent's callback: not called
    assert (await _mode(database))[0].name == RUNNING
    await mode.set_paused(False)
    assert released == [RUNNING]  # a resume wakes the links


async def test_import_refuses_peers_until_it_ends(database: Database) -> None:
    mode, released = await _mode(database)
    mode.begin_import()
    assert mode.name == IMPORTING and not mode.exchanging
    assert mode.refusal() == ("importing", "this shop is importing the group's counts")
    mode.end_import()
    assert mode.name == RUNNING and mode.refusal() is None
    assert released == [RUNNING]
    # the join's own progress record resumes an import: the mode itself does not persist it
    assert (await _mode(database))[0].name == RUNNING


async def test_maintenance_holds_only_this_shops_own_changes(database: Database) -> None:
    mode, released = await _mode(database)
    await mode.set_maintenance({"on": True, "auto": True, "since": 1.0})
    assert mode.name == MAINTENANCE
    assert mode.exchanging and mode.held_back and not mode.sending_own
    assert mode.refusal() is None  # peers are answered; only this shop's stream is held
    restarted, _ = await _mode(database)
    assert restarted.name == MAINTENANCE and restarted.maintenance["auto"] is True
    await mode.set_maintenance({"on": False, "auto": False, "since": 2.0})
    assert mode.name == RUNNING and mode.sending_own
    assert released == [RUNNING]
    assert (await _mode(database))[0].name == RUNNING


async def test_paused_and_importing_win_over_maintenance(database: Database) -> None:
    mode, released = await _mode(database)
    await mode.set_maintenance({"on": True})
    await mode.set_paused(True)
    assert mode.name == PAUSED and mode.refusal() is not None
    await mode.set_paused(False)
    assert mode.name == MAINTENANCE and not mode.sending_own
    mode.begin_import()
    assert mode.name == IMPORTING
    mode.end_import()
    assert mode.name == MAINTENANCE
    assert released == [MAINTENANCE, MAINTENANCE]  # links wake; they still hold own changes
