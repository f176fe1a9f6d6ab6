"""`shopsync demo`, the README's first command: three shops agree, and it cleans up after itself."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.support.head_start import HeadStart


def _running_in(workdir: Path) -> list[int]:
    """Processes whose command line names `workdir` (the demo's agents and emulators)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if proc.name.isdigit() and str(workdir) in cmdline:
            found.append(int(proc.name))
    return found


async def _demo(workdir: Path, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agent.cli",
        "demo",
        "--workdir",
        str(workdir),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=_env(),
    )


DEMO_ARGS = ["--duration", "1", "--skus", "8"]


def head_starts(tests: set[str]) -> dict[str, HeadStart]:
    """The demo runs from collection on, beside the other tests (it mostly waits on its shops)."""
    if "test_the_demo_converges_and_says_where_its_shops_live" not in tests:
        return {}
    workdir = tempfile.mkdtemp(prefix="shopsync-demo-test-")
    argv = [sys.executable, "-m", "agent.cli", "demo", "--workdir", workdir, *DEMO_ARGS]
    return {"demo": HeadStart(argv, cwd=Path(__file__).resolve().parents[1], env=_env())}


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "COLUMNS"}  # as piped by a newcomer


async def test_the_demo_converges_and_says_where_its_shops_live(
    head_started: dict[str, HeadStart], tmp_path: Path
) -> None:
    started = head_started.get("demo")
    if started is None:  # run on its own
        proc = await _demo(tmp_path, *DEMO_ARGS)
        out, err = await asyncio.wait_for(proc.communicate(), 240)
        run = subprocess.CompletedProcess([], proc.returncode, out.decode(), err.decode())
    else:
        run = await asyncio.to_thread(started.result, 300)
        tmp_path = Path(started.argv[started.argv.index("--workdir") + 1])
    assert run.returncode == 0, run.stderr[-2000:]
    text = run.stdout
    summary = json.loads(text.splitlines()[-1])
    assert summary["converged"] is True and summary["shops"] == 3 and summary["skus"] == 8
    assert summary["seconds"] >= summary["setup_seconds"] > 0  # set-up is told apart
    assert {"trading_seconds", "settling_seconds"} <= summary.keys()
    shops = re.findall(r"^(shop\d-\w+\.example\.com) emulator http://.*, data (.*)$", text, re.M)
    assert [shop for shop, _ in shops] == [
        "shop1-shopify.example.com",  # one shop per platform by default
        "shop2-shopline.example.com",
        "shop3-pisell.example.com",
    ]
    for shop, data in shops:  # a newcomer can point the CLI at each (the line is not cut at 80)
        assert data == str(tmp_path / shop) and (Path(data) / "shopsync.toml").exists()
    assert _running_in(tmp_path) == []
    if started is not None:
        shutil.rmtree(tmp_path)


async def test_sigterm_stops_the_demo_and_every_process_it_started(tmp_path: Path) -> None:
    proc = await _demo(tmp_path, "--duration", "60")
    assert proc.stdout is not None
    while b"shop2-" not in await asyncio.wait_for(proc.stdout.readline(), 120):
        pass  # the second shop is up: two emulators and two agents are running
    assert len(_running_in(tmp_path)) >= 3
    proc.send_signal(signal.SIGTERM)
    await asyncio.wait_for(proc.wait(), 60)
    assert proc.returncode == 128 + signal.SIGTERM
    assert _running_in(tmp_path) == []
