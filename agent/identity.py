"""Making and loading an agent: config file, key pair, database and identity row."""

from __future__ import annotations

import secrets
import uuid

from sqlmodel import select

from agent import signing
from agent.channel import ConfigError
from agent.clock import Clock
from agent.config import CONFIG_NAME, Settings, write_settings
from agent.db import Database
from agent.models import Identity
from agent.plugins import Registry

__all__ = ["InitResult", "init_agent"]


class InitResult(dict[str, str]):
    """What `shopsync init --json` prints: domain, admin_token, fingerprint, config."""


async def init_agent(settings: Settings, registry: Registry, clock: Clock) -> InitResult:
    """Create the data directory's config (0600), key pair (0600), database and identity.

    Refuses to overwrite an existing agent: its key and epoch are its identity in the group.
    """
    settings.admin_token = settings.admin_token or secrets.token_urlsafe(32)
    settings.validate()
    cls = registry.channel(settings.channel)
    cls.settings_class.from_options(settings.channel_options)  # fail before writing anything
    config_path = settings.data_dir / CONFIG_NAME
    if config_path.exists() or settings.key_path.exists():
        raise ConfigError(f"{settings.data_dir} already holds an agent; choose another --data-dir")
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.db_url)
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
    signing.save_private_key(key, settings.key_path)
    path = write_settings(settings)
    return InitResult(
        domain=settings.domain,
        admin_token=settings.admin_token,
        fingerprint=signing.fingerprint(public),
        config=str(path),
    )
