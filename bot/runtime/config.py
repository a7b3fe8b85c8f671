"""Settings: a TOML file with `RETOUCH_*` environment overrides.

The file is read with `tomllib` ourselves (rather than through pydantic-settings' TOML
source) so that a broken file is reported with its path, line and column; the parsed table
is then handed to pydantic-settings as the lowest-priority source, beneath the environment.
"""

from __future__ import annotations

import contextlib
import os
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, SettingsError

from bot.providers.registry import SPECS
from bot.providers.settings import HostSettings, ProvidersSettings, Section, holds_secret, url_or_none
from storage.store import StoreUrl

DEFAULT_CONFIG_PATH = Path("config.toml")
ENV_PREFIX = "RETOUCH_"


class DiscordSettings(Section):
    token: SecretStr
    api_base: str | None = None
    gateway_url: str | None = None
    dev_guilds: list[int] = Field(default_factory=list)
    # The only hosts members' images are fetched from (no fetching arbitrary URLs: SSRF).
    # Attachments come from the first two; pictures in link embeds through the images-ext proxies.
    cdn_hosts: list[str] = Field(
        default_factory=lambda: [
            "cdn.discordapp.com",
            "media.discordapp.net",
            "images-ext-1.discordapp.net",
            "images-ext-2.discordapp.net",
        ]
    )

    # Gateway shards, for a bot in many servers or run as several processes over one store: the
    # total, and the ones this process runs (all of them when unset). Discord sends DMs to shard 0
    # only, so across the processes shard 0 must be run by exactly one.
    shard_count: Annotated[int, Field(ge=1)] | None = None
    shard_ids: list[int] | None = None

    _urls = field_validator("api_base", "gateway_url")(url_or_none)

    @field_validator("shard_ids")
    @classmethod
    def _shards_within_count(cls, ids: list[int] | None, info: ValidationInfo) -> list[int] | None:
        """Each process names its own shards; only the total tells whether an id exists."""
        if ids is None:
            return None
        count = info.data.get("shard_count")
        if count is None:
            if "shard_count" not in info.data:
                return ids  # shard_count itself is wrong, and is reported on its own
            raise ValueError("needs discord.shard_count, the number of shards across every process")
        if not ids:
            raise ValueError("is empty; list the shards this process runs, or leave it out to run all")
        outside = sorted({shard for shard in ids if not 0 <= shard < count})
        if outside:
            raise ValueError(
                f"shard ids run from 0 to {count - 1} (discord.shard_count is {count}); "
                f"{', '.join(map(str, outside))} is not one"
            )
        if len(set(ids)) != len(ids):
            raise ValueError("names a shard twice")
        return sorted(ids)


class EditingSettings(Section):
    """Defaults and limits for edits; servers override the defaults with /retouch settings."""

    default_quality: Literal["low", "medium", "high"] = "high"
    # Edits a member (or a whole server) may have waiting or running at once.
    max_jobs_per_member: Annotated[int, Field(ge=1, le=100)] = 3
    max_jobs_per_server: Annotated[int, Field(ge=1, le=10_000)] = 20
    # Let members use /edit in DMs with the bot (credits from credits.dm_allowance).
    allow_dms: bool = False
    # Megabytes of decoded pixels held at once across every edit (inputs, masks, result checks);
    # the rest waits its turn. With the bot's other needs, the process stays within idle + 500 MB.
    image_memory_mb: Annotated[int, Field(ge=100, le=65_536)] = 200


class JobsSettings(Section):
    """How processes sharing one database share its jobs."""

    # Seconds a process's claim on a job lasts unless renewed (it renews every third of it).
    # When a process dies, another finishes its jobs within about this long.
    lease_seconds: Annotated[float, Field(ge=3, le=3600)] = 30.0


Period = Literal["day", "week", "month", "none"]


class CreditsSettings(Section):
    """Defaults for every server; moderators override allowances and the period per server."""

    # Credits per output image at 1K, by quality; 2K and 4K multiply it.
    prices: dict[str, Annotated[int, Field(ge=0)]] = Field(
        default_factory=lambda: {"low": 1, "medium": 4, "high": 14}
    )
    resolution_multiplier: dict[str, Annotated[int, Field(ge=1)]] = Field(
        default_factory=lambda: {"1K": 1, "2K": 2, "4K": 4}
    )
    default_allowance: Annotated[int, Field(ge=0)] = 50
    period: Period = "day"
    dm_allowance: Annotated[int, Field(ge=0)] = 0
    # Credits per period for edits through a member's own install of Retouch, where the server has
    # not installed it or in group DMs; 0 turns that personal use off.
    personal_allowance: Annotated[int, Field(ge=0)] = 0
    # Ask the member to confirm an edit that costs more than this many credits.
    confirm_above: Annotated[int, Field(ge=0)] = 20


class BudgetSettings(Section):
    """The owner's hard caps on real money across all servers; unset = no cap."""

    usd_per_day: Annotated[float, Field(gt=0)] | None = None
    usd_per_month: Annotated[float, Field(gt=0)] | None = None


class StorageSettings(Section):
    # Where the jobs, ledger and settings are kept: `sqlite:///data/retouch.db` or
    # `postgresql://user:password@host:5432/retouch`. Unset: the SQLite file at `path`.
    url: str | None = None
    path: Path = Path("data/retouch.db")
    files_dir: Path = Path("data/files")
    # Inputs and outputs older than this are deleted, and the oldest first above the size cap.
    retention_days: Annotated[int, Field(ge=1)] = 30
    max_gib: Annotated[float, Field(gt=0)] = 5.0

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, value: str | None) -> str | None:
        if value is not None:
            StoreUrl.parse(value)  # raises ValueError with the schemes it knows
        return value

    @property
    def store(self) -> StoreUrl:
        """The store in use: `url`, else the SQLite file at `path`."""
        return StoreUrl.parse(self.url if self.url is not None else f"sqlite:///{self.path}")


class WebSettings(Section):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8080
    public_url: str | None = None
    # Connections held at once; keep it well under the open-file limit (ulimit -n).
    max_connections: Annotated[int, Field(ge=1, le=10_000)] = 100
    # Seconds a client has to send a whole request head, after connecting or a previous response.
    header_timeout: Annotated[float, Field(gt=0)] = 10.0
    # Seconds a callback has to send its whole body, and the most it may send.
    body_timeout: Annotated[float, Field(gt=0)] = 30.0
    max_body_bytes: Annotated[int, Field(ge=1024, le=64 * 1024 * 1024)] = 1024 * 1024
    # Per host: callbacks a minute that carry no valid signature (unsigned hosts, forgeries).
    unverified_callbacks_per_minute: Annotated[int, Field(ge=1)] = 120

    _urls = field_validator("public_url")(url_or_none)


class LogSettings(Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    json_format: bool = Field(default=False, alias="json")

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value


class _FileUnderEnvironment(BaseSettings):
    """Settings read from the environment over the file's table (passed as init arguments)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        nested_model_default_partial_update=True,
        hide_input_in_errors=True,
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Earlier sources win: the environment overrides the file's table.
        return (env_settings, init_settings)


class _ProvidersOnly(_FileUnderEnvironment):
    """The providers table alone, to name missing host keys while another table is broken."""

    providers: ProvidersSettings = Field(default_factory=ProvidersSettings)


class Settings(_FileUnderEnvironment):
    """The whole configuration; see config.example.toml for every key."""

    discord: DiscordSettings
    providers: ProvidersSettings = Field(default_factory=ProvidersSettings)
    editing: EditingSettings = Field(default_factory=EditingSettings)
    jobs: JobsSettings = Field(default_factory=JobsSettings)
    credits: CreditsSettings = Field(default_factory=CreditsSettings)
    budget: BudgetSettings = Field(default_factory=BudgetSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    web: WebSettings = Field(default_factory=WebSettings)
    log: LogSettings = Field(default_factory=LogSettings)


class ConfigError(Exception):
    """Raised with every problem found, each a (key, message) pair, so all are reported at once."""

    def __init__(self, problems: list[tuple[str, str]], source: str) -> None:
        self.problems = problems
        self.source = source
        super().__init__(self.render())

    def render(self) -> str:
        lines = [f"Configuration problems ({self.source}):"]
        for key, message in self.problems:
            lines.append(f"  {key}: {message}{_how_to_set(key)}")
        return "\n".join(lines)


def _how_to_set(key: str) -> str:
    if "." not in key:
        return ""
    table, _, leaf = key.rpartition(".")
    env = ENV_PREFIX + key.upper().replace(".", "__")
    return f" (set `{leaf}` under [{table}] in the config file, or the environment variable {env})"


def resolve_config_path(cli_path: str | os.PathLike[str] | None) -> Path:
    """`--config`, else `RETOUCH_CONFIG`, else ./config.toml."""
    if cli_path is not None:
        return Path(cli_path)
    return Path(os.environ.get("RETOUCH_CONFIG", DEFAULT_CONFIG_PATH))


def read_toml(path: Path) -> dict[str, Any]:
    """The file's table; a missing default file is an empty table, an unreadable one an error."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([("file", f"cannot read {path}: {exc}")], str(path)) from exc
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([("file", f"{path} is not valid TOML: {exc}")], str(path)) from exc


def load_settings(cli_path: str | os.PathLike[str] | None = None) -> Settings:
    """Validated settings, or a ConfigError naming every missing or wrong key."""
    path = resolve_config_path(cli_path)
    if cli_path is not None and not path.exists():
        raise ConfigError([("file", f"{path} does not exist")], str(path))
    source = f"{path}" if path.exists() else f"{path} (not found; environment only)"
    table = read_toml(path)
    try:
        settings = Settings(**table)
    except ValidationError as exc:
        problems = [p for err in exc.errors() for p in _describe(err)]
        if not any(key.partition(".")[0] == "providers" for key, _ in problems):
            # Every problem in one run: the host keys are still checked while another table is bad.
            with contextlib.suppress(ValidationError):
                problems += _host_problems(_ProvidersOnly(providers=table.get("providers", {})).providers)
        raise ConfigError(problems, source) from None
    except SettingsError as exc:
        raise ConfigError([_unreadable_environment(exc)], source) from None
    problems = list(_host_problems(settings.providers))
    if problems:
        raise ConfigError(problems, source)
    return settings


def _host_problems(providers: ProvidersSettings) -> Iterator[tuple[str, str]]:
    """Cross-key checks pydantic cannot express per field: every ordered host needs a key."""
    for host in providers.order:
        if host not in SPECS:
            yield "providers.order", f"{host!r} is not supported by this version of Retouch"
            continue
        host_settings: HostSettings = getattr(providers, host)
        if host_settings.api_key is None:
            yield f"providers.{host}.api_key", "missing: the host is in providers.order but has no key"


def _unreadable_environment(error: SettingsError) -> tuple[str, str]:
    """pydantic-settings names the table whose variable is not JSON; its value is never repeated."""
    found = re.search(r'field "([^"]+)"', str(error))
    table = found.group(1) if found else "environment"
    variable = ENV_PREFIX + table.upper()
    return table, f"{variable} (or a {variable}__… variable) is not valid JSON; check its quotes and brackets"


def _may_show_input(loc: tuple[int | str, ...]) -> bool:
    """A wrong value is echoed to help fix it, unless it is (or is a table holding) a secret."""
    annotation: Any = Settings
    for part in loc:
        model = next(
            (
                arg
                for arg in (annotation, *get_args(annotation))
                if isinstance(arg, type) and issubclass(arg, BaseModel)
            ),
            None,
        )
        if model is None:
            break  # inside a list or a dict of plain values
        field = next(
            (f for name, f in model.model_fields.items() if part in (name, f.alias)),
            None,
        )
        if field is None:
            return False
        annotation = field.annotation
    return not holds_secret(annotation)


_KINDS: tuple[tuple[type | UnionType, str], ...] = (
    (bool, "true/false"),
    (int | float, "a number"),
    (str, "text"),
    (list, "a list"),
    (dict, "a table"),
)


def _kind(value: Any) -> str:
    """What a value is (TOML's words), to say what was given without showing it."""
    return next((word for kind, word in _KINDS if isinstance(value, kind)), type(value).__name__)


def _describe(error: Any) -> Iterator[tuple[str, str]]:
    key = ".".join(str(part) for part in error["loc"])
    if error["type"] == "missing" and isinstance(error.get("input"), str):
        yield key, "missing (it is empty)"
    elif error["type"] == "missing":
        section = Settings.model_fields.get(key)
        model = section.annotation if section is not None else None
        if isinstance(model, type) and issubclass(model, BaseModel):
            # A whole missing table: name the keys inside it that have no default.
            for name, field in model.model_fields.items():
                if field.is_required():
                    yield f"{key}.{name}", "missing"
            return
        yield key, "missing"
    elif error["type"] == "extra_forbidden":
        yield key, "unknown key (check its spelling against config.example.toml)"
    else:
        given = error.get("input")
        if not _may_show_input(error["loc"]):
            shown = f" (got {_kind(given)}; not shown, as it may be a secret)"
        else:
            shown = "" if isinstance(given, dict) or given is None else f" (got {given!r})"
        yield key, f"{error['msg']}{shown}"


def shards(discord: DiscordSettings) -> str:
    """Which gateway shards this process runs, in words for the summary."""
    if discord.shard_count is None:
        return "off (one gateway connection)"
    if discord.shard_ids is None:
        return f"all {discord.shard_count} in this process"
    return f"{', '.join(map(str, discord.shard_ids))} of {discord.shard_count}"


def summary(settings: Settings) -> list[str]:
    """A short, secret-free description for `check-config` and the start-up log."""

    def mask(secret: SecretStr | None) -> str:
        if secret is None:
            return "not set"
        value = secret.get_secret_value()
        return f"set (…{value[-4:]})" if len(value) >= 12 else "set"

    lines = [
        f"discord.token: {mask(settings.discord.token)}",
        f"discord.api_base: {settings.discord.api_base or 'Discord'}",
        "discord.dev_guilds: "
        + (", ".join(map(str, settings.discord.dev_guilds)) or "none (commands sync globally)"),
        f"discord.shards: {shards(settings.discord)}",
        f"providers.order: {', '.join(settings.providers.order)}",
    ]
    for host in settings.providers.order:
        host_settings = getattr(settings.providers, host)
        lines.append(f"providers.{host}.api_key: {mask(host_settings.api_key)}")
        lines.append(f"providers.{host}.base_url: {host_settings.base_url}")
    lines += [
        f"editing.image_memory_mb: {settings.editing.image_memory_mb}",
        f"storage: {settings.storage.store}",
        f"storage.files_dir: {settings.storage.files_dir}",
        f"web: {settings.web.host}:{settings.web.port}, callbacks "
        + (f"at {settings.web.public_url}" if settings.web.public_url else "off (polling)"),
        f"log: {settings.log.level}{' json' if settings.log.json_format else ''}",
    ]
    return lines
