"""The service's settings from the environment and `.env`; every variable is in `.env.example`.

These are the frame's: server, memory manager, budget and admission, admin. A workload brings
its own settings class (app/workload/settings.py) and loads it with ``load``, so its variables
live with it and go with it. A bad value stops startup with one line per bad variable, naming
it, the value and what is allowed: a starter that silently falls back to a default hides the
very setting being tuned. A variable that looks like a setting but is none (a typo) gets one
warning line naming the closest setting, since it would otherwise be silently ignored.
"""

from __future__ import annotations

import difflib
import ipaddress
from collections.abc import Callable, Iterable, Mapping
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

from dotenv import dotenv_values
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.memory.cgroup import read_cgroup_memory
from app.memory.measure import MB
from app.profiles import ProfileError, load_profiles

FALLBACK_LIMIT_MB = 500.0  # Railway's Free plan limit, used only when no cgroup limit is found
MIN_ADMIN_TOKEN_CHARS = 16
# Railway's edge documents no source address, so only a proxy on the same host is trusted.
DEFAULT_FORWARDED_ALLOW_IPS = "127.0.0.1,::1"


class ConfigError(ValueError):
    """Bad configuration; ``lines`` holds one operator-facing line per bad variable."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines
        super().__init__("\n".join(lines))


ENV_FILE = ".env"
SETTINGS_CONFIG = SettingsConfigDict(
    env_file=ENV_FILE, extra="ignore", frozen=True, allow_inf_nan=False
)
# Variables the service reads that are not fields of a settings class.
OTHER_VARIABLES = frozenset({"MEMORY_PROFILES_FILE"})
# Variables whose value a configuration error never repeats: they hold secrets.
HIDDEN_VARIABLES = frozenset({"ADMIN_TOKEN", "DATABASE_URL"})
S = TypeVar("S", bound=BaseSettings)


class Settings(BaseSettings):
    model_config = SETTINGS_CONFIG
    # A variable starting with one of these that is no setting is warned about (a typo).
    ENV_PREFIXES: ClassVar[tuple[str, ...]] = ("MEMORY_", "ADMISSION_", "LIMIT_", "WEB_")

    host: str = "0.0.0.0"
    port: int = Field(8000, ge=1, le=65535)
    web_concurrency: int = Field(1, ge=1, le=64)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    access_log: bool = True
    forwarded_allow_ips: str = DEFAULT_FORWARDED_ALLOW_IPS
    api_docs: bool = False
    memory_profile: str | None = None

    memory_cleanup: bool = True
    memory_cleanup_interval: float = Field(60.0, gt=0, le=86400)
    memory_cleanup_threshold_mb: float = Field(100.0, ge=0)
    memory_limit_mb: float | None = Field(None, gt=0)
    memory_idle_release_seconds: float = Field(5.0, ge=0, le=3600)
    memory_check_min_seconds: float = Field(1.0, gt=0, le=3600)
    memory_release_min_mb: float = Field(4.0, ge=0)

    admin_token: SecretStr | None = None
    threadpool_size: int = Field(40, ge=1, le=1000)  # AnyIO's, for every sync endpoint
    # How long a thread running Python keeps the GIL while another waits (app/main.py).
    switch_interval_ms: float = Field(5.0, ge=0.1, le=100)
    shutdown_grace_seconds: int = Field(10, ge=0, le=600)  # uvicorn takes whole seconds
    limit_max_requests: int | None = Field(None, ge=1)
    limit_max_requests_jitter: int = Field(0, ge=0)
    # The server the launcher execs: uvicorn (the service as built), or Granian as a peer to
    # measure against (dev lock only), recycling its worker above WORKERS_MAX_RSS_MB.
    server: Literal["uvicorn", "granian"] = "uvicorn"
    workers_max_rss_mb: int | None = Field(None, ge=1, le=1_000_000)

    # The memory budget and admission control (app/memory/budget.py, admission.py, gate.py).
    memory_admission: bool = True
    memory_headroom_mb: float | None = Field(None, gt=0)  # for the whole service: workers split it
    memory_inflight_mb: float | None = Field(None, gt=0)  # for the whole service: workers split it
    admission_queue: int = Field(4, ge=0, le=10_000)
    admission_max_wait_seconds: float = Field(2.0, ge=0, le=600)
    max_connections: int | None = Field(None, ge=1, le=1_000_000)  # per worker
    # Requests worked on at once per worker, the rest wait (app/memory/door.py); unset: twice
    # THREADPOOL_SIZE; 0: no door.
    max_requests_working: int | None = Field(None, ge=0, le=1_000_000)
    header_timeout_seconds: float = Field(10.0, gt=0, le=3600)
    body_timeout_seconds: float = Field(30.0, gt=0, le=3600)
    # Slow clients (app/edge/rates.py; an admitted route's body also in app/memory/gate.py, under
    # any server): below these rates for the grace period, a connection is closed; 0 turns a
    # floor off. Kestrel's defaults: 240 bytes/s after 5 s.
    min_body_rate_bytes: float = Field(240.0, ge=0, le=1_000_000_000)
    min_response_rate_bytes: float = Field(240.0, ge=0, le=1_000_000_000)
    min_rate_grace_seconds: float = Field(5.0, ge=1, le=3600)
    send_buffer_kb: int = Field(16, ge=0, le=65536)  # SO_SNDBUF per connection; 0 = autotuning
    memory_outbound_mb: float | None = Field(None, gt=0)  # for the whole service: workers split it

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator(
        "memory_limit_mb",
        "limit_max_requests",
        "workers_max_rss_mb",
        "admin_token",
        "memory_headroom_mb",
        "memory_inflight_mb",
        "memory_outbound_mb",
        "max_connections",
        "max_requests_working",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("memory_profile", mode="before")
    @classmethod
    def _known_profile(cls, value: object) -> object:
        if value in (None, ""):
            return None
        try:
            names = load_profiles().names
        except ProfileError as exc:
            raise ValueError(str(exc)) from None
        if value not in names:
            raise ValueError(f"not a profile; allowed: {', '.join(names)}")
        return value

    @field_validator("admin_token")
    @classmethod
    def _strong_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return value
        secret = value.get_secret_value()
        if len(secret) < MIN_ADMIN_TOKEN_CHARS:
            raise ValueError(f"must be at least {MIN_ADMIN_TOKEN_CHARS} characters (or unset)")
        # A client sends header bytes; only visible ASCII is the same bytes in every encoding.
        if not all("!" <= char <= "~" for char in secret):
            raise ValueError(
                "must be printable ASCII, '!' to '~' (no spaces, control or non-ASCII characters)"
            )
        return value

    @field_validator("forwarded_allow_ips", mode="before")
    @classmethod
    def _proxy_addresses(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        return normalise_proxy_addresses(value)

    @model_validator(mode="after")
    def _threshold_under_limit(self) -> Settings:
        if self.memory_cleanup_threshold_mb >= self.limit_mb:
            raise ValueError(
                f"MEMORY_CLEANUP_THRESHOLD_MB={self.memory_cleanup_threshold_mb:g} must be below "
                f"the memory limit ({self.limit_mb:g} MB, from {self.limit_source})"
            )
        return self

    @model_validator(mode="after")
    def _jitter_needs_a_limit(self) -> Settings:
        if self.limit_max_requests_jitter and self.limit_max_requests is None:
            raise ValueError(
                f"LIMIT_MAX_REQUESTS_JITTER={self.limit_max_requests_jitter} needs "
                "LIMIT_MAX_REQUESTS: there is no restart to spread"
            )
        return self

    @model_validator(mode="after")
    def _request_limit_needs_a_supervisor(self) -> Settings:
        if self.limit_max_requests is None:
            return self
        if self.server != "uvicorn":
            raise ValueError(
                f"LIMIT_MAX_REQUESTS={self.limit_max_requests} is uvicorn's; "
                "with SERVER=granian recycle on memory with WORKERS_MAX_RSS_MB"
            )
        if self.web_concurrency == 1:
            # uvicorn with one worker ends the whole server at the limit with exit status 0, and
            # Railway's ON_FAILURE policy restarts only a non-zero exit: the service stays down.
            raise ValueError(
                f"LIMIT_MAX_REQUESTS={self.limit_max_requests} needs WEB_CONCURRENCY >= 2: with "
                "one worker uvicorn exits 0 at the limit and ON_FAILURE does not restart that"
            )
        return self

    @model_validator(mode="after")
    def _rss_limit_needs_granian(self) -> Settings:
        if self.workers_max_rss_mb is not None and self.server != "granian":
            raise ValueError(
                f"WORKERS_MAX_RSS_MB={self.workers_max_rss_mb} needs SERVER=granian: "
                "uvicorn has no memory-based recycling"
            )
        return self

    @cached_property
    def _cgroup_limit_mb(self) -> float | None:
        reading = read_cgroup_memory()
        if reading is None or reading.limit_bytes is None:
            return None
        return reading.limit_bytes / MB

    @property
    def worker_limit_mb(self) -> float:
        """Each worker's share of the memory limit."""
        return self.limit_mb / self.web_concurrency

    @property
    def limit_mb(self) -> float:
        """MEMORY_LIMIT_MB, else the cgroup's limit, else 500 MB."""
        if self.memory_limit_mb is not None:
            return self.memory_limit_mb
        return self._cgroup_limit_mb or FALLBACK_LIMIT_MB

    @property
    def limit_source(self) -> str:
        if self.memory_limit_mb is not None:
            return "MEMORY_LIMIT_MB"
        return "cgroup" if self._cgroup_limit_mb else "default"


def normalise_proxy_addresses(value: str) -> str:
    """Comma-separated IP addresses and networks, or `*`; empty means the default.

    uvicorn takes any string and silently treats a typo as a literal that never matches, so the
    check is done here, where a bad entry can stop startup.
    """
    entries = [entry.strip() for entry in value.split(",") if entry.strip()]
    if not entries:
        return DEFAULT_FORWARDED_ALLOW_IPS
    if entries == ["*"]:
        return "*"
    for entry in entries:
        try:
            ipaddress.ip_network(entry, strict=True)
        except ValueError:
            raise ValueError(
                f"{entry[:64]!r} is not an IP address or network: list addresses and networks "
                "with commas (127.0.0.1,10.0.0.0/8,::1), or give * alone"
            ) from None
    return ",".join(entries)


def _describe(error: Mapping[str, Any]) -> str:
    loc = [str(part) for part in error.get("loc", ())]
    message = error.get("msg", "invalid").removeprefix("Value error, ")
    if not loc:  # model-level checks already name their variables
        return f"configuration error: {message}"
    name = loc[0].upper()
    value = error.get("input")
    shown = "<hidden>" if name in HIDDEN_VARIABLES else repr(value)
    return f"configuration error: {name}={shown}: {message}"


def load(settings_type: type[S], **overrides: object) -> S:
    """A settings class read from the environment and `.env`, or ConfigError with one line per
    bad variable: the frame's and any workload's alike."""
    # Overrides are field values pydantic checks at run time, like the environment's.
    build: Callable[..., S] = settings_type
    try:
        return build(**overrides)
    except ValidationError as exc:
        raise ConfigError([_describe(err) for err in exc.errors()]) from None


def load_settings(**overrides: object) -> Settings:
    """The frame's settings, or ConfigError with one line per bad variable."""
    return load(Settings, **overrides)


def variable_names(settings_type: type[BaseSettings]) -> set[str]:
    return {name.upper() for name in settings_type.model_fields}


def near_misses(
    settings_types: Iterable[type[BaseSettings]],
    environ: Mapping[str, str],
    env_file: str | Path = ENV_FILE,
) -> list[str]:
    """One warning line per variable (environment or `.env`) that starts like a setting of
    ours (a class's ENV_PREFIXES) but is none, naming the closest setting."""
    types = list(settings_types)
    known = set(OTHER_VARIABLES).union(*(variable_names(t) for t in types))
    prefixes = tuple(p for t in types for p in getattr(t, "ENV_PREFIXES", ()))
    given = set(environ)
    if Path(env_file).is_file():
        given |= set(dotenv_values(env_file))
    lines = []
    for name in sorted(given):
        upper = name.upper()
        if upper in known or not upper.startswith(prefixes):
            continue
        closest = difflib.get_close_matches(upper, known, n=1, cutoff=0.6)
        hint = f"did you mean {closest[0]}?" if closest else "no setting is close to it"
        lines.append(f"setting warning: {name} is not a setting and is ignored; {hint}")
    return lines
