"""`shopsync demo`, the README's first command: three shops agree, and it cleans up after itself."""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import shutil
import signal
import sys
import tempfile
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.support.head_start import Command, HeadStart


def _running_in(workdir: Path) -> list[int]:
    """Processes whose command line names `workdir` (the demo's agents and emulators). The
    test kit's supervisor of a head-started demo names it too, and ends a moment after the
    demo (once it noted the demo's exit status): it is not one of the demo's."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "head_start.py" in cmdline:
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


# Left running after its summary, so that the test can scrape every agent's /metrics, as an
# operator would point Prometheus at it, and then stop it with SIGTERM.
DEMO_ARGS = ["--duration", "1", "--skus", "8", "--keep-running"]
STOPS = "Ctrl-C (or SIGTERM) stops everything."
ADMIN = re.compile(r"^(shop\d-\w+\.example\.com): admin (http://\S+)/ token (\S+);", re.M)
#: Every series an operator would chart (README, Metrics), as the scrape's sample names.
SERIES = {
    "shopsync_webhooks_total",
    "shopsync_local_events_total",
    "shopsync_pending_work",
    "shopsync_propagation_seconds_bucket",
    "shopsync_propagation_seconds_count",
    "shopsync_peer_events_behind",
    "shopsync_peer_last_contact_age_seconds",
    "shopsync_peer_up",
    "shopsync_alerts_open",
    "shopsync_import_done",
    "shopsync_import_total",
    "shopsync_import_running",
    "shopsync_platform_calls_total",
    "shopsync_written_rows_total",
    "shopsync_platform_requests_total",
    "shopsync_rate_budget_ratio",
}


def head_starts(tests: set[str]) -> dict[str, Command]:
    """The demo runs from collection on, beside the other tests (it mostly waits on its shops)."""
    if "test_the_demo_converges_and_says_where_its_shops_live" not in tests:
        return {}
    # made by the demo: under xdist every worker asks, and only one of them starts it
    workdir = os.path.join(tempfile.gettempdir(), f"shopsync-demo-test-{secrets.token_hex(6)}")
    argv = [sys.executable, "-m", "agent.cli", "demo", "--workdir", workdir, *DEMO_ARGS]
    return {"demo": Command(argv, cwd=Path(__file__).resolve().parents[1], env=_env())}


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "COLUMNS"}  # as piped by a newcomer


async def test_the_demo_converges_and_says_where_its_shops_live(
    head_started: dict[str, HeadStart], tmp_path: Path
) -> None:
    started = head_started.get("demo")
    if started is None:  # run on its own
        proc = await _demo(tmp_path, *DEMO_ARGS)
        assert proc.stdout is not None
        lines = []
        while STOPS not in (lines[-1] if lines else ""):
            line = await asyncio.wait_for(proc.stdout.readline(), 240)
            assert line, "the demo ended before its summary"
            lines.append(line.decode())
        text = "".join(lines)
        pid = proc.pid
    else:
        found = await asyncio.to_thread(started.output_until, STOPS, 300)
        assert found is not None, started.stderr()[-2000:]
        text, pid = found, started.pid
        tmp_path = Path(started.argv[started.argv.index("--workdir") + 1])
    summary = json.loads(next(line for line in text.splitlines() if line.startswith("{")))
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
    admins = ADMIN.findall(text)
    assert [shop for shop, _, _ in admins] == [shop for shop, _ in shops]
    async with aiohttp.ClientSession() as http:
        for shop, url, token in admins:
            others = {other for other, _, _ in admins} - {shop}
            async with http.get(url + "/metrics") as resp:
                assert resp.status == 401  # the metrics need the token
            headers = {"Authorization": f"Bearer {token}"}
            async with http.get(url + "/metrics", headers=headers) as resp:
                assert resp.status == 200
                samples = _samples(await resp.text())
            names = {name for name, _ in samples}
            assert names >= SERIES, (shop, SERIES - names)
            for other in others:  # every peer's changes arrived here, and it answers
                assert samples["shopsync_propagation_seconds_count", f"origin={other}"] > 0
                assert samples["shopsync_peer_up", f"peer={other}"] == 1
            assert samples["shopsync_webhooks_total", "result=accepted"] > 0
            assert samples["shopsync_written_rows_total", "result=ok"] > 0
            assert samples["shopsync_platform_requests_total", "outcome=requests"] > 0
            assert 0 <= samples["shopsync_rate_budget_ratio", ""] <= 1
    os.kill(pid, signal.SIGTERM)  # and it stops, with every process it started
    if started is None:
        await asyncio.wait_for(proc.wait(), 60)
        code = proc.returncode
    else:
        code = (await asyncio.to_thread(started.result, 60)).returncode
    assert code == 128 + signal.SIGTERM
    assert _running_in(tmp_path) == []
    if started is not None:
        shutil.rmtree(tmp_path)


def _samples(text: str) -> dict[tuple[str, str], float]:
    """A Prometheus scrape as {(sample name, its labels as "k=v,…"): value}."""
    return {
        (sample.name, ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


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
