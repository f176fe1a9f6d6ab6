"""The ingest benchmark runs end to end on real processes and ends with its JSON line."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


async def test_ingest_quick_ends_with_a_json_line_of_converged_figures(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ROOT / "bench" / "ingest.py"),
        "--quick",
        "--purchases",
        "50",
        "--skus",
        "10",
        "--workdir",
        str(tmp_path),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout=60)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode == 0, stderr.decode()[-2000:]
    last = stdout.decode().strip().splitlines()[-1]
    figures = json.loads(last)
    assert figures["bench"] == "ingest"
    assert figures["ok"] is True
    assert figures["purchases"] == 50
    assert figures["changes_per_s"] > 0
    assert 0 < figures["events"] <= 50
