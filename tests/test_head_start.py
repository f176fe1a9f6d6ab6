"""The suite's own plumbing: a head start runs once per run whichever worker asks, any worker
sees how it ended, a stop reaches everything it started; and a collection with two tests of
one node id is refused (xdist would run only one of them)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from tests.support.head_start import Command, HeadStart, stop_all

ROOT = Path(__file__).resolve().parent.parent
# the suite's conftest as a plugin, on a directory of its own
COLLECT = [sys.executable, "-m", "pytest", "-p", "tests.conftest", "-p", "no:cacheprovider"]
COLLECT += ["--collect-only", "-q"]


def _command(script: str, tmp_path: Path) -> Command:
    return Command(
        [sys.executable, "-c", textwrap.dedent(script)], cwd=tmp_path, env=dict(os.environ)
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_command_claimed_by_two_workers_runs_once_and_both_see_its_end(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    runs = tmp_path / "runs"
    command = _command(
        f"""
        import sys
        with open({str(runs)!r}, "a") as f:
            f.write("ran\\n")
        print("out")
        print("err", file=sys.stderr)
        sys.exit(3)
        """,
        tmp_path,
    )
    first = HeadStart.claim(run_dir, "job", command)
    second = HeadStart.claim(run_dir, "job", command)  # another worker, the same run
    done = second.result(timeout=30)
    assert (done.returncode, done.stdout, done.stderr) == (3, "out\n", "err\n")
    assert first.result(timeout=30).returncode == 3
    assert done.args == command.argv
    assert runs.read_text() == "ran\n"  # started once


def test_a_stop_reaches_the_command_and_what_it_started(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    command = _command(
        """
        import subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        print(child.pid, flush=True)
        time.sleep(600)
        """,
        tmp_path,
    )
    started = HeadStart.claim(run_dir, "sleeper", command)
    text = started.output_until("\n", timeout=30)
    assert text is not None, started.stderr()
    child, own = int(text), started.pid
    assert _alive(child) and _alive(own)
    view = HeadStart(run_dir / "sleeper")  # as the controller sees it at the end of the run
    assert view.result(timeout=0.5).returncode == -signal.SIGTERM  # stopped when its time ran out
    deadline = time.monotonic() + 10
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child)  # the command's own child went with it
    stop_all(run_dir)
    assert not run_dir.exists()


def test_output_until_is_none_when_the_command_ends_without_the_marker(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    started = HeadStart.claim(run_dir, "quiet", _command("print('not it')", tmp_path))
    assert started.output_until("READY", timeout=30) is None
    assert started.result(timeout=30).returncode == 0


def test_two_tests_with_one_node_id_are_refused_at_collection(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text(
        textwrap.dedent(
            """
            import pytest

            def pytest_pycollect_makeitem(collector, name, obj):
                if name == "test_twice":  # as schemathesis made them under pytest 9.2
                    return [
                        pytest.Function.from_parent(collector, name=name, callobj=obj)
                        for _ in range(2)
                    ]
            """
        )
    )
    (tmp_path / "test_twice.py").write_text("def test_twice():\n    pass\n")
    run = subprocess.run(
        [*COLLECT, str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 4, run.stdout + run.stderr  # a usage error, nothing run
    assert "same node id" in run.stderr and "test_twice.py::test_twice" in run.stderr
