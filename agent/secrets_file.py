"""Reading a file that holds secrets (the config, the agent's key): only if it is private."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["SharedSecretFile", "read_private"]


class SharedSecretFile(Exception):
    """The file is readable or writable by group or others; the message says the fix."""


def read_private(path: Path, holds: str) -> bytes:
    """The bytes of `path`, which holds `holds` ("a private key", …); SharedSecretFile when
    group or others may access it. OSError (missing, unreadable) passes through."""
    with open(path, "rb") as fh:
        # fstat on the open file: the mode checked is the mode of the bytes read.
        mode = os.fstat(fh.fileno()).st_mode & 0o777
        if os.name == "posix" and mode & 0o077:
            raise SharedSecretFile(
                f"{path} has mode {mode:04o}: it holds {holds}, so group and others must not "
                f"access it; run `chmod 600 {path}`"
            )
        return fh.read()
