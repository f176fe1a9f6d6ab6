"""The agent's TOML config (`D/shopsync.toml`) as typed settings."""

from __future__ import annotations

import dataclasses
import difflib
import os
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import tomli_w
import tomlkit

from agent.alerts import KINDS as ALERT_KINDS
from agent.alerts import AlertSettings
from agent.channel import ConfigError
from agent.notify import NotifySettings
from agent.rules import RuleError, ShopRules, rules_from_wire
from agent.secrets_file import SharedSecretFile, read_private
from agent.warehouses import DEFAULT, OWN, LocationMap, WarehouseError
from agent.wire import MAX_PAGE as MAX_SNAPSHOT_PAGE

__all__ = [
    "CONFIG_NAME",
    "Settings",
    "load_settings",
    "parse_listen",
    "save_locations",
    "save_rules",
    "write_settings",
]

#: How `[locations]` names the channel's own location (its `location_id`, or the shop's
#: primary): every other key is a platform location id, as the channel's plugin names it.
PRIMARY_KEY = "primary"

CONFIG_NAME = "shopsync.toml"
KEY_NAME = "agent.key"
#: The shortest admin or metrics token accepted; `shopsync init` makes 43 characters.
MIN_TOKEN = 16


def parse_listen(value: str) -> tuple[str, int]:
    """`HOST:PORT` → (host, port), with a clear error."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"listen must be HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


def _number(section: dict[str, Any], name: str, default: float) -> float:
    """A numeric setting; a string, a bool or a table is refused naming the setting."""
    value = section.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    return float(value)


def _whole(section: dict[str, Any], name: str, default: int) -> int:
    """A whole-number setting; 2.5, a string or a bool is refused naming the setting."""
    value = section.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be a whole number, got {value!r}")
    return value


def _flag(section: dict[str, Any], name: str) -> bool:
    """A true/false setting; "no" or 0 is refused rather than read as truthy."""
    value = section.get(name, False)
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be true or false, got {value!r}")
    return value


class _Read(dict[str, Any]):
    """A table of the config file that remembers which of its keys were read, so that a key
    nothing reads (a misspelling, a setting of another version) is named, not ignored."""

    def __init__(self, table: Any, where: str = "") -> None:
        if not isinstance(table, dict):
            raise ConfigError(f"{where} must be a table, got {table!r}")
        super().__init__(table)
        self.where = where  # "" for the file's top level, whose keys are tables
        self.read: set[str] = set()

    def __getitem__(self, key: str) -> Any:
        self.read.add(key)
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        self.read.add(key)
        return super().get(key, default)

    def refuse_unread(self, path: Path) -> None:
        """ConfigError for the first key nothing read, with the closest key that is read."""
        for key in sorted(set(self) - self.read):
            name = (lambda k: f"[{k}]") if not self.where else (lambda k: k)
            close = difflib.get_close_matches(key, sorted(self.read), n=1)
            hint = f" (did you mean {name(close[0])}?)" if close else ""
            known = ", ".join(name(k) for k in sorted(self.read))
            what = f"setting {key} in {self.where}" if self.where else f"table {name(key)}"
            raise ConfigError(f"{path}: unknown {what}{hint}; known: {known}")


def _alert_settings(table: _Read, path: Path) -> AlertSettings:
    """`[alerts]`: low-stock thresholds (whole numbers, 0 or more) and grace periods."""

    def level(name: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"{path}: [alerts] {name} must be a whole number of 0 or more")
        return value

    low = table.get("low_stock")
    skus = table.get("low_stock_skus", {})
    if not isinstance(skus, dict):
        raise ConfigError(f"{path}: [alerts] low_stock_skus must be a table of SKU = number")
    settings = AlertSettings(
        low_stock=None if low is None else level("low_stock", low),
        low_stock_skus={str(k): level(f"low_stock_skus.{k}", v) for k, v in skus.items()},
        peer_grace=_number(table, "peer_grace", 300.0),
        import_stall=_number(table, "import_stall", 600.0),
    )
    for name in ("peer_grace", "import_stall"):
        if not getattr(settings, name) > 0:
            raise ConfigError(f"{path}: [alerts] {name} must be a positive number of seconds")
    table.refuse_unread(path)
    return settings


def _notify_settings(table: _Read, path: Path) -> NotifySettings:
    """`[notify]`: a webhook (URL and a secret of 16+ characters) and/or e-mail over SMTP."""

    def fail(message: str) -> ConfigError:
        return ConfigError(f"{path}: [notify] {message}")

    def text(name: str) -> str:
        value = table.get(name, "")
        if not isinstance(value, str):
            raise fail(f"{name} must be text, got {value!r}")
        return value.strip()

    def kinds(name: str) -> tuple[str, ...]:
        value = table.get(name, list(ALERT_KINDS))
        if not isinstance(value, list) or not all(isinstance(k, str) for k in value):
            raise fail(f"{name} must be a list of alert kinds")
        unknown = [k for k in value if k not in ALERT_KINDS]
        if unknown:
            raise fail(f"{name}: unknown kind {unknown[0]!r}; one of: {', '.join(ALERT_KINDS)}")
        return tuple(value)

    to = table.get("email_to", [])
    if isinstance(to, str):
        to = [to]
    if not isinstance(to, list) or not all(isinstance(a, str) and "@" in a for a in to):
        raise fail("email_to must be an address or a list of addresses")
    port = table.get("smtp_port", 587)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise fail(f"smtp_port must be a port number, got {port!r}")
    settings = NotifySettings(
        webhook_url=text("webhook_url"),
        webhook_secret=text("webhook_secret"),
        webhook_kinds=kinds("webhook_kinds"),
        email_to=tuple(to),
        email_from=text("email_from"),
        smtp_host=text("smtp_host"),
        smtp_port=port,
        smtp_user=text("smtp_user"),
        smtp_password=text("smtp_password"),
        smtp_security=text("smtp_security") or "starttls",
        email_kinds=kinds("email_kinds"),
    )
    table.refuse_unread(path)
    if settings.webhook_url:
        _check_url("[notify] webhook_url", settings.webhook_url)
        if len(settings.webhook_secret) < MIN_TOKEN:
            raise fail(
                f"webhook_secret must have at least {MIN_TOKEN} characters: the receiver checks "
                "each message's signature with it"
            )
    if settings.email_to and not settings.smtp_host:
        raise fail("email_to needs smtp_host (the SMTP server that sends the e-mail)")
    if settings.smtp_security not in ("starttls", "tls", "none"):
        raise fail(f"smtp_security must be starttls, tls or none, got {settings.smtp_security!r}")
    return settings


def _check_token(name: str, value: str) -> None:
    """A bearer token long enough that guessing it is hopeless."""
    if len(value) < MIN_TOKEN:
        made = "is empty" if not value else f"has only {len(value)} characters"
        raise ConfigError(
            f"{name} {made}: use at least {MIN_TOKEN} random characters, e.g. the output of "
            "`python3 -c 'import secrets; print(secrets.token_urlsafe(32))'` "
            "(`shopsync init` makes one of 43)"
        )


def _check_url(name: str, value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"{name} must be an http(s) URL, got {value!r}")
    return value.rstrip("/")


@dataclasses.dataclass(slots=True)
class Settings:
    """Everything an agent needs to start, read from its data directory."""

    data_dir: Path
    domain: str
    listen: str
    public_url: str
    admin_token: str
    channel: str
    channel_options: dict[str, Any]
    database_url: str = ""
    reconcile_interval: float = 300.0
    # seconds between the starts of two full catalogue passes that webhooks ask for (the
    # periodic one and an admin's run regardless); product webhooks are looked up instead
    catalogue_min_interval: float = 300.0
    # seconds between checks that the platform still holds the webhook subscriptions
    webhook_check_interval: float = 3600.0
    coalesce_ms: float = 5.0
    sku_trim: bool = False
    sku_case_fold: bool = False
    log_retention_days: float = 90.0  # sync-log entries older than this are pruned; 0 keeps all
    metrics_token: str = ""  # bearer token of /metrics; empty: the admin token
    snapshot_page_size: int = 5000  # pools per page of the snapshot a joiner downloads from here
    compaction_interval: float = 60.0  # seconds between compactions of history; 0: none
    history_horizon_days: float = 7.0  # a member out of touch longer re-imports on return
    rules: ShopRules = dataclasses.field(default_factory=ShopRules)  # [rules]: what to publish
    alerts: AlertSettings = dataclasses.field(default_factory=AlertSettings)  # [alerts]
    notify: NotifySettings = dataclasses.field(default_factory=NotifySettings)  # [notify]
    # [locations]: location ("" for the channel's own) -> the warehouses it sells from, in
    # order; by default the own location sells from the default warehouse alone
    locations: dict[str, list[str]] = dataclasses.field(default_factory=dict)

    def location_map(self) -> LocationMap:
        """`locations` as the pipeline uses them (checked by `validate`)."""
        return LocationMap(OWN, self.locations)

    @property
    def key_path(self) -> Path:
        """The Ed25519 private key file (mode 0600)."""
        return self.data_dir / KEY_NAME

    @property
    def db_url(self) -> str:
        """The SQLAlchemy async URL: the configured one, or SQLite in the data directory."""
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{self.data_dir / 'shopsync.db'}"

    def validate(self) -> Settings:
        """Check every field; raise ConfigError naming the first bad one."""
        _check_token("admin_token", self.admin_token)
        if self.metrics_token:
            _check_token("metrics_token", self.metrics_token)
        if not self.domain or "/" in self.domain or " " in self.domain:
            raise ConfigError(
                f"domain must be a shop domain like shop.example.com: {self.domain!r}"
            )
        parse_listen(self.listen)
        self.public_url = _check_url("public_url", self.public_url)
        if not self.channel:
            raise ConfigError("channel is required")
        if self.database_url and not self.database_url.startswith(
            ("sqlite+aiosqlite://", "postgresql+asyncpg://", "postgresql://", "postgres://")
        ):
            raise ConfigError(
                "database_url must be sqlite+aiosqlite:///PATH or postgresql://USER@HOST/DB"
            )
        if self.database_url.startswith(("postgresql://", "postgres://")):
            self.database_url = "postgresql+asyncpg://" + self.database_url.split("://", 1)[1]
        if not self.reconcile_interval > 0:  # also refuses NaN
            raise ConfigError("reconcile_interval must be positive")
        if not self.catalogue_min_interval >= 0:
            raise ConfigError("catalogue_min_interval must be 0 or more (seconds)")
        if not self.webhook_check_interval > 0:
            raise ConfigError("webhook_check_interval must be positive (seconds)")
        if not self.coalesce_ms >= 0:
            raise ConfigError("coalesce_ms must be 0 or more")
        if not self.log_retention_days >= 0:  # also refuses NaN
            raise ConfigError("log_retention_days must be 0 (keep everything) or more")
        if not 1 <= self.snapshot_page_size <= MAX_SNAPSHOT_PAGE:
            raise ConfigError(f"snapshot_page_size must be from 1 to {MAX_SNAPSHOT_PAGE} pools")
        if not self.compaction_interval >= 0:
            raise ConfigError("compaction_interval must be 0 (never compact) or more (seconds)")
        if not self.history_horizon_days > 0:
            raise ConfigError("history_horizon_days must be a positive number of days")
        try:
            self.location_map()
        except WarehouseError as exc:
            raise ConfigError(f"[locations]: {exc}") from None
        return self


def write_settings(settings: Settings) -> Path:
    """Write `D/shopsync.toml` with mode 0600 (it holds the admin token and channel secrets)."""
    doc = {
        "agent": {
            "domain": settings.domain,
            "listen": settings.listen,
            "public_url": settings.public_url,
            "admin_token": settings.admin_token,
            "database_url": settings.database_url,
            "reconcile_interval": settings.reconcile_interval,
            "catalogue_min_interval": settings.catalogue_min_interval,
            "webhook_check_interval": settings.webhook_check_interval,
            "coalesce_ms": settings.coalesce_ms,
            "sku_trim": settings.sku_trim,
            "sku_case_fold": settings.sku_case_fold,
            "log_retention_days": settings.log_retention_days,
            "metrics_token": settings.metrics_token,
            "snapshot_page_size": settings.snapshot_page_size,
            "compaction_interval": settings.compaction_interval,
            "history_horizon_days": settings.history_horizon_days,
        },
        "channel": {"name": settings.channel, "options": dict(settings.channel_options)},
    }
    rules = settings.rules.to_wire()
    if rules:
        doc["rules"] = rules
    if settings.alerts != AlertSettings():
        doc["alerts"] = settings.alerts.to_wire()
    if settings.notify != NotifySettings():
        doc["notify"] = settings.notify.to_wire()
    if _locations_wire(settings.locations):
        doc["locations"] = _locations_wire(settings.locations)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    path = settings.data_dir / CONFIG_NAME
    _write_private(path, tomli_w.dumps(doc).encode())
    return path


def save_rules(settings: Settings, rules: ShopRules) -> Path:
    """Write `rules` as the ``[rules]`` table of `D/shopsync.toml`, keeping everything else in
    the file as the owner wrote it, comments included; then they are `settings.rules`."""
    path = settings.data_dir / CONFIG_NAME
    doc = tomlkit.parse(_read_private(path).decode())
    wire = rules.to_wire()
    if wire:
        doc["rules"] = wire
    elif "rules" in doc:
        del doc["rules"]
    _write_private(path, tomlkit.dumps(doc).encode())
    settings.rules = rules
    return path


def _locations_wire(locations: dict[str, list[str]]) -> dict[str, list[str]]:
    """The `[locations]` table of `Settings.locations` (empty when it is the default)."""
    if {k: list(v) for k, v in locations.items()} in ({}, {OWN: [DEFAULT]}):
        return {}
    return {(k or PRIMARY_KEY): list(v) for k, v in locations.items()}


def _locations_from(table: Any, path: Path) -> dict[str, list[str]]:
    """`[locations]` as `Settings.locations`; ConfigError naming a malformed entry."""
    if table is None:
        return {}
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [locations] must be a table of location = [warehouses]")
    out: dict[str, list[str]] = {}
    for key, value in table.items():
        if not isinstance(value, list) or not all(isinstance(w, str) for w in value):
            raise ConfigError(
                f"{path}: [locations] {key} must be a list of warehouse names, "
                f'like {key} = ["main"]'
            )
        out[OWN if key == PRIMARY_KEY else str(key)] = list(value)
    return out


def save_locations(settings: Settings, locations: dict[str, list[str]]) -> Path:
    """Write `locations` as the ``[locations]`` table of `D/shopsync.toml`, keeping the rest
    of the file as the owner wrote it; then they are `settings.locations`. Checked first:
    WarehouseError says what is wrong, and nothing is written."""
    LocationMap(OWN, locations)
    path = settings.data_dir / CONFIG_NAME
    doc = tomlkit.parse(_read_private(path).decode())
    wire = _locations_wire(locations)
    if wire:
        doc["locations"] = wire
    elif "locations" in doc:
        del doc["locations"]
    _write_private(path, tomlkit.dumps(doc).encode())
    settings.locations = {k: list(v) for k, v in locations.items()}
    return path


def _write_private(path: Path, data: bytes) -> None:
    """Replace `path` by `data` at once (mode 0600: it holds secrets)."""
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def _read_private(path: Path) -> bytes:
    """The bytes of the config file, refused when group or others may access it."""
    try:
        return read_private(path, "the admin token and channel secrets")
    except SharedSecretFile as exc:
        raise ConfigError(str(exc)) from None


def load_settings(data_dir: str | Path) -> Settings:
    """Read and validate `D/shopsync.toml`; ConfigError with one clear line on any problem."""
    data_dir = Path(data_dir)
    path = data_dir / CONFIG_NAME
    try:
        raw = tomllib.loads(_read_private(path).decode())
    except FileNotFoundError:
        raise ConfigError(
            f"no agent in {data_dir}: {path} not found (run `shopsync init --data-dir {data_dir}`)"
        ) from None
    except PermissionError:
        raise ConfigError(
            f"cannot read {path}: permission denied (run shopsync as the user that owns it)"
        ) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    top = _Read(raw)
    agent = _Read(top.get("agent", {}), "[agent]")
    channel = _Read(top.get("channel", {}), "[channel]")
    rules_table = top.get("rules")
    locations = _locations_from(top.get("locations"), path)
    alerts = _alert_settings(_Read(top.get("alerts", {}), "[alerts]"), path)
    notify = _notify_settings(_Read(top.get("notify", {}), "[notify]"), path)
    top.refuse_unread(path)
    try:
        rules = rules_from_wire(rules_table)
    except RuleError as exc:
        raise ConfigError(f"{path}: [rules]: {exc}") from None
    try:
        settings = Settings(
            data_dir=data_dir,
            domain=str(agent["domain"]),
            listen=str(agent["listen"]),
            public_url=str(agent["public_url"]),
            admin_token=str(agent["admin_token"]),
            channel=str(channel["name"]),
            channel_options=dict(channel.get("options", {})),
            database_url=str(agent.get("database_url", "")),
            reconcile_interval=_number(agent, "reconcile_interval", 300.0),
            catalogue_min_interval=_number(agent, "catalogue_min_interval", 300.0),
            webhook_check_interval=_number(agent, "webhook_check_interval", 3600.0),
            coalesce_ms=_number(agent, "coalesce_ms", 5.0),
            sku_trim=_flag(agent, "sku_trim"),
            sku_case_fold=_flag(agent, "sku_case_fold"),
            log_retention_days=_number(agent, "log_retention_days", 90.0),
            metrics_token=str(agent.get("metrics_token", "")),
            snapshot_page_size=_whole(agent, "snapshot_page_size", 5000),
            compaction_interval=_number(agent, "compaction_interval", 60.0),
            history_horizon_days=_number(agent, "history_horizon_days", 7.0),
            rules=rules,
            alerts=alerts,
            notify=notify,
            locations=locations,
        )
    except KeyError as exc:
        for table in (agent, channel):  # a misspelled name first: it says what to fix
            table.refuse_unread(path)
        raise ConfigError(f"{path} lacks the setting {exc.args[0]}") from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{path} has a malformed setting: {exc}") from None
    for table in (agent, channel):
        table.refuse_unread(path)
    return settings.validate()
