"""Slow commands started as soon as the tests are collected, so they run beside the rest.

The 300 simulation seeds keep a core busy for minutes, and installing Chromium on a new
machine waits on the disk and the network; the end-to-end tests mostly wait on their agent
processes. Started at collection, at a lower CPU priority, the slow commands fill the time the
other tests leave idle, and the test that needs a result waits for it (`HeadStart.result`).
A command whose test was not collected is never started; one still running when the session
ends is killed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

__all__ = ["HeadStart"]


class HeadStart:
    """One command running in the background, its output kept in files until asked for."""

    def __init__(self, argv: list[str], *, cwd: Path, env: dict[str, str]) -> None:
        self.argv = argv
        self._dir = tempfile.TemporaryDirectory(prefix="shopsync-head-start-")
        out = Path(self._dir.name)
        self._stdout, self._stderr = out / "stdout", out / "stderr"
        with self._stdout.open("w") as stdout, self._stderr.open("w") as stderr:
            # nice: the tests in the foreground keep first call on the CPU
            self.proc = subprocess.Popen(
                ["nice", "-n", "10", *argv],
                cwd=cwd,
                env=env,
                stdout=stdout,
                stderr=stderr,
                start_new_session=True,  # its own process group: a kill reaches its workers
            )

    def result(self, timeout: float) -> subprocess.CompletedProcess[str]:
        """Wait for the command (killing it after `timeout` seconds) and return its output."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._kill()
        return subprocess.CompletedProcess(
            self.argv, self.proc.returncode, self._stdout.read_text(), self._stderr.read_text()
        )

    def output_until(self, marker: str, timeout: float) -> str | None:
        """The output so far once it holds `marker` (a command that keeps running), or None
        if the command ended or `timeout` seconds passed first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self._stdout.read_text()
            if marker in text:
                return text
            if self.proc.poll() is not None:
                return None
            time.sleep(0.2)
        return None

    def stderr(self) -> str:
        return self._stderr.read_text()

    def stop(self) -> None:
        """Kill the command if it still runs and remove its output files."""
        self._kill()
        self._dir.cleanup()

    def _kill(self) -> None:
        """SIGTERM first, so that a command that started processes of its own (the demo) stops
        them; SIGKILL what is left after 10 s."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
