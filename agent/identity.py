"""Making and loading an agent: config file, key pair, database and identity row."""

from __future__ import annotations

import os
import secrets
import stat
import uuid
from pathlib import Path

import structlog
from sqlalchemy.engine import make_url
from sqlmodel import select

from agent import signing
from agent.channel import ConfigError
from agent.clock import Clock
from agent.config import CONFIG_NAME, Settings, write_settings
from agent.db import Database
from agent.models import Identity
from agent.plugins import Registry

__all__ = ["InitResult", "check_new", "init_agent", "make_private_dir", "prepare_run"]

log = structlog.get_logger(__name__)


class InitResult(dict[str, str]):
    """What `shopsync init --json` prints: domain, admin_token, fingerprint, config."""


async def init_agent(settings: Settings, registry: Registry, clock: Clock) -> InitResult:
    """Create the data directory (0700), its config (0600), key pair (0600), database (0600,
    for SQLite) and identity.

    Refuses to overwrite an existing agent: its key and epoch are its identity in the group.
    """
    check_new(settings, registry)
    make_private_dir(settings.data_dir)
    db = Database(settings.db_url)
    umask = os.umask(0o077)  # the SQLite file is created by the first connection
    try:
        await db.upgrade()
        async with db.sessions.begin() as session:
            existing = (await session.exec(select(Identity))).first()
            if existing is not None:
                raise ConfigError(
                    f"the database already belongs to agent {existing.domain}; "
                    "use an empty database"
                )
            key = signing.generate_keypair()
            public = signing.public_key_b64(key)
            session.add(
                Identity(
                    id=1,
                    domain=settings.domain,
                    epoch=uuid.uuid4().hex[:16],
                    public_key=public,
                    created_at=clock.now(),
                )
            )
    finally:
        await db.dispose()
        os.umask(umask)
    signing.save_private_key(key, settings.key_path)
    path = write_settings(settings)
    return InitResult(
        domain=settings.domain,
        admin_token=settings.admin_token,
        fingerprint=signing.fingerprint(public),
        config=str(path),
    )


def check_new(settings: Settings, registry: Registry) -> None:
    """Every setting of a new agent valid, and its data directory free (ConfigError naming
    the first problem); makes the admin token if there is none. Writes nothing."""
    settings.admin_token = settings.admin_token or secrets.token_urlsafe(32)
    settings.validate()
    cls = registry.channel(settings.channel)
    cls.settings_class.from_options(settings.channel_options)  # fail before writing anything
    config_path = settings.data_dir / CONFIG_NAME
    if config_path.exists() or settings.key_path.exists():
        raise ConfigError(f"{settings.data_dir} already holds an agent; choose another --data-dir")


def make_private_dir(path: Path) -> None:
    """Create `path` (and missing parents) with mode 0700; an existing one we own is tightened."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    _tighten(path, 0o700)


def _tighten(path: Path, mode: int) -> None:
    """Take group and other permissions off `path` if this user owns it (and say so)."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return
    if os.name != "posix" or info.st_uid != os.geteuid():
        return
    current = stat.S_IMODE(info.st_mode)
    if current & 0o077:
        path.chmod(current & mode)
        log.info("file_mode_tightened", path=str(path), was=f"{current:04o}", now=f"{mode:04o}")


def _tighten_database(settings: Settings) -> None:
    """SQLite files (the database, its -wal, -shm and -journal) to 0600 where we own them."""
    if not settings.db_url.startswith("sqlite"):
        return
    database = make_url(settings.db_url).database
    if database and database != ":memory:":
        for suffix in ("", "-wal", "-shm", "-journal"):
            _tighten(Path(database + suffix), 0o600)


def prepare_run(settings: Settings) -> None:
    """Before `shopsync run`: private files from now on, and the agent's key checked.

    The umask 077 makes every file the agent creates — the SQLite database and its -wal and
    -shm files among them — readable by this user only; the data directory and database
    files made before (by an older version, a restore, a copy) are tightened. The key is
    loaded once here so that a bad key file is one line at start, not a failure later.
    """
    os.umask(0o077)
    _tighten(settings.data_dir, 0o700)
    _tighten_database(settings)
    try:
        signing.load_private_key(settings.key_path)
    except signing.SigningError as exc:
        if _shared(settings.key_path):  # the message says `chmod 600`
            raise ConfigError(str(exc)) from None
        raise ConfigError(
            f"{exc}; restore it from a backup (it is this agent's identity in its group: "
            "a new key means a new agent, made with `shopsync init`)"
        ) from None


def _shared(path: Path) -> bool:
    try:
        return os.name == "posix" and bool(path.stat().st_mode & 0o077)
    except OSError:
        return False
