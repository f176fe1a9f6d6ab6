"""Slow commands started as soon as the tests are collected, so they run beside the rest.

The 300 simulation seeds keep a core busy for minutes, and installing Chromium on a new
machine waits on the disk and the network; the end-to-end tests mostly wait on their agent
processes. Started at collection, at a lower CPU priority, the slow commands fill the time the
other tests leave idle, and the test that needs a result waits for it (`HeadStart.result`).
A command whose test was not collected is never started; one still running when the session
ends is stopped.

The suite runs in pytest-xdist workers, and every worker collects every test, yet each command
starts once: the worker that first claims its name (a directory made atomically in the run's
directory, which the controller hands to every worker) starts it. A small supervisor (this
module run as a script) starts the command, records its pid and, when it ends, its exit status
in that directory, so any worker can wait for it, read its output or stop it, and the
controller stops what is left when the run ends.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Command", "HeadStart", "stop_all"]


@dataclass(frozen=True)
class Command:
    """What a test module asks to start at collection (its `head_starts(tests)`)."""

    argv: list[str]
    cwd: Path
    env: dict[str, str]


class HeadStart:
    """One command running in the background, seen through its directory: `argv`, `pgid`
    (the supervisor's process group, which holds the command and what it starts), `pid` (the
    command's), `stdout`, `stderr` and, once it ended, `rc`."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @classmethod
    def claim(cls, run_dir: Path, name: str, command: Command) -> HeadStart:
        """The command `name` of this run: started here, under a supervisor, unless another
        worker claimed it first."""
        directory = run_dir / name
        try:
            directory.mkdir()
        except FileExistsError:
            return cls(directory)
        _write(directory / "argv", json.dumps(command.argv))
        proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), str(directory), *command.argv],
            cwd=command.cwd,
            env=command.env,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: a stop reaches the command's workers
        )
        threading.Thread(target=proc.wait, daemon=True).start()  # reaped as soon as it ends
        _write(directory / "pgid", str(proc.pid))
        return cls(directory)

    @property
    def argv(self) -> list[str]:
        return json.loads(self._wait_for("argv"))

    @property
    def pid(self) -> int:
        """The command's own process id (a signal sent to it alone, as a user would)."""
        return int(self._wait_for("pid"))

    def result(self, timeout: float) -> subprocess.CompletedProcess[str]:
        """Wait for the command (stopping it after `timeout` seconds) and return its output."""
        deadline = time.monotonic() + timeout
        while not self._ended() and time.monotonic() < deadline:
            time.sleep(0.2)
        self._kill()
        return subprocess.CompletedProcess(
            self.argv, self._returncode(), self._text("stdout"), self._text("stderr")
        )

    def output_until(self, marker: str, timeout: float) -> str | None:
        """The output so far once it holds `marker` (a command that keeps running), or None
        if the command ended or `timeout` seconds passed first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self._text("stdout")
            if marker in text:
                return text
            if self._ended():
                return None
            time.sleep(0.2)
        return None

    def stderr(self) -> str:
        return self._text("stderr")

    def stop(self) -> None:
        """Stop the command if it still runs and remove its traces."""
        self._kill()
        shutil.rmtree(self.directory, ignore_errors=True)

    def _kill(self) -> None:
        """SIGTERM first, so that a command that started processes of its own (the demo) stops
        them; SIGKILL what is left after 10 s."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if self._ended():
                return
            with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
                os.killpg(int(self._wait_for("pgid")), sig)
            deadline = time.monotonic() + 10
            while not self._ended() and time.monotonic() < deadline:
                time.sleep(0.05)

    def _ended(self) -> bool:
        if (self.directory / "rc").exists():
            return True
        pgid = self._pgid()
        if pgid is None:
            return False  # its worker is still starting it
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True  # killed before it could record how it ended
        except PermissionError:
            pass
        return False

    def _pgid(self) -> int | None:
        text = _read(self.directory / "pgid")
        return int(text) if text else None

    def _returncode(self) -> int | None:
        text = _read(self.directory / "rc")
        return int(text) if text else None

    def _text(self, name: str) -> str:
        return _read(self.directory / name) or ""

    def _wait_for(self, name: str) -> str:
        deadline = time.monotonic() + 60
        while (text := _read(self.directory / name)) is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {name} in {self.directory}: its command never started")
            time.sleep(0.05)
        return text


def stop_all(run_dir: Path) -> None:
    """Stop every command of the run that still runs, and remove the run's directory."""
    if run_dir.is_dir():
        for directory in run_dir.iterdir():
            HeadStart(directory).stop()
    shutil.rmtree(run_dir, ignore_errors=True)


def _read(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return None


def _write(path: Path, text: str) -> None:
    """Write whole or not at all: a reader never sees half a file."""
    part = path.with_name(path.name + ".part")
    part.write_text(text)
    part.replace(path)


def _supervise(directory: Path, argv: list[str]) -> int:
    """Run `argv` (niced: the tests in the foreground keep first call on the CPU), note its
    pid, and its exit status when it ends. A SIGTERM to the group is for the command: the
    supervisor outlives it to note how it ended."""
    signal.signal(signal.SIGTERM, lambda *_: None)  # a handler, not SIG_IGN: the command gets
    # the default back at exec
    with (directory / "stdout").open("w") as out, (directory / "stderr").open("w") as err:
        proc = subprocess.Popen(["nice", "-n", "10", *argv], stdout=out, stderr=err)
    _write(directory / "pid", str(proc.pid))
    code = proc.wait()
    _write(directory / "rc", str(code))
    return 0


if __name__ == "__main__":
    sys.exit(_supervise(Path(sys.argv[1]), sys.argv[2:]))
