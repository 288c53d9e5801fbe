"""Settings: every bad value stops startup with one line naming the variable and the value."""

from __future__ import annotations

from pathlib import Path

import pytest

from app import config
from app.config import ConfigError, load, load_settings, near_misses
from app.main import load_configuration
from app.memory.cgroup import CgroupMemory
from app.profiles import load_profiles
from app.workload.settings import BulkSettings

MB = 1024 * 1024

BAD_VALUES = [
    ("PORT", "abc"),
    ("PORT", "0"),
    ("PORT", "70000"),
    ("WEB_CONCURRENCY", "0"),
    ("WEB_CONCURRENCY", "two"),
    ("LOG_LEVEL", "verbose"),
    ("ACCESS_LOG", "maybe"),
    ("FORWARDED_ALLOW_IPS", "10.0.0.300"),
    ("FORWARDED_ALLOW_IPS", "10.0.0.1/8"),
    ("FORWARDED_ALLOW_IPS", "proxy.internal"),
    ("FORWARDED_ALLOW_IPS", "*,10.0.0.1"),
    ("API_DOCS", "sometimes"),
    ("MEMORY_CLEANUP", "sometimes"),
    ("MEMORY_CLEANUP_INTERVAL", "abc"),
    ("MEMORY_CLEANUP_INTERVAL", "-5"),
    ("MEMORY_CLEANUP_INTERVAL", "0"),
    ("MEMORY_CLEANUP_INTERVAL", "nan"),
    ("MEMORY_CLEANUP_THRESHOLD_MB", "-1"),
    ("MEMORY_CLEANUP_THRESHOLD_MB", "lots"),
    ("MEMORY_LIMIT_MB", "0"),
    ("MEMORY_LIMIT_MB", "-512"),
    ("MEMORY_LIMIT_MB", "512MB"),
    ("MEMORY_IDLE_RELEASE_SECONDS", "-1"),
    ("MEMORY_IDLE_RELEASE_SECONDS", "soon"),
    ("MEMORY_CHECK_MIN_SECONDS", "0"),
    ("MEMORY_RELEASE_MIN_MB", "-4"),
    ("CACHE_TTL_SECONDS", "0"),
    ("CACHE_MAX_ENTRIES", "0"),
    ("CACHE_MAX_ENTRIES", "1.5"),
    ("CACHE_MAX_MB", "0"),
    ("MAX_BULK_RECORDS", "0"),
    ("MAX_BODY_MB", "0"),
    ("MAX_BODY_MB", "4096"),
    ("THREADPOOL_SIZE", "0"),
    ("SWITCH_INTERVAL_MS", "0"),
    ("SWITCH_INTERVAL_MS", "500"),
    ("SHUTDOWN_GRACE_SECONDS", "-1"),
    ("LIMIT_MAX_REQUESTS", "0"),
    ("LIMIT_MAX_REQUESTS", "many"),
    ("LIMIT_MAX_REQUESTS_JITTER", "-1"),
    ("SERVER", "gunicorn"),
    ("WORKERS_MAX_RSS_MB", "0"),
    ("WORKERS_MAX_RSS_MB", "120MB"),
    ("BULK_CONCURRENCY", "0"),
    ("BULK_CONCURRENCY", "2.5"),
    ("MEMORY_ADMISSION", "perhaps"),
    ("MEMORY_HEADROOM_MB", "0"),
    ("MEMORY_HEADROOM_MB", "some"),
    ("MEMORY_INFLIGHT_MB", "-1"),
    ("ADMISSION_QUEUE", "-1"),
    ("ADMISSION_QUEUE", "short"),
    ("ADMISSION_MAX_WAIT_SECONDS", "-1"),
    ("MAX_CONNECTIONS", "0"),
    ("MAX_CONNECTIONS", "lots"),
    ("MAX_REQUESTS_WORKING", "-1"),
    ("MAX_REQUESTS_WORKING", "many"),
    ("HEADER_TIMEOUT_SECONDS", "0"),
    ("MEMORY_OUTBOUND_MB", "0"),
    ("MIN_BODY_RATE_BYTES", "-1"),
    ("MIN_RESPONSE_RATE_BYTES", "fast"),
    ("MIN_RATE_GRACE_SECONDS", "0.5"),
    ("SEND_BUFFER_KB", "-4"),
    ("BODY_TIMEOUT_SECONDS", "-3"),
    ("BODY_TIMEOUT_SECONDS", "inf"),
]


def only_line(exc: ConfigError) -> str:
    assert len(exc.lines) == 1, exc.lines
    (line,) = exc.lines
    assert "\n" not in line
    return line


def refusal(monkeypatch: pytest.MonkeyPatch, **environ: str) -> str:
    """The one line startup stops with under these variables."""
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        load_configuration()  # the frame's settings and the workload's
    return only_line(info.value)


@pytest.fixture
def cgroup_limit(monkeypatch: pytest.MonkeyPatch) -> list[int | None]:
    """The cgroup limit Settings sees; append a value (bytes or None) to set it."""
    limits: list[int | None] = []

    def fake() -> CgroupMemory | None:
        if not limits:
            return None
        return CgroupMemory(2, "/", limits[-1], 64 * MB, 60 * MB)

    monkeypatch.setattr(config, "read_cgroup_memory", fake)
    return limits


@pytest.mark.parametrize(("name", "value"), BAD_VALUES)
def test_bad_value_stops_with_one_line_naming_variable_and_value(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    line = refusal(monkeypatch, **{name: value})
    assert line.startswith(f"configuration error: {name}={value!r}: ")
    assert len(line) > len(f"configuration error: {name}={value!r}: ")  # says why


# Settings without a bad value above: any string is a value for these two (a host that cannot be
# bound or a path that cannot be created fails when used), and two have tests of their own below.
FREE_FORM = {"HOST", "DATABASE_PATH"}
TESTED_BELOW = {"ADMIN_TOKEN", "MEMORY_PROFILE", "DATABASE_URL"}


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("mysql://u:secret@db:3306/app", "postgresql://"),
        ("postgresql://u:secret@:5432/app", "no host"),
        ("postgresql://u:secret@db:port/app", "not a URL"),
        ("postgresql://u:secret@db:5432", "no database"),
        ("postgresql://u:secret@db:5432/app?sslmod=require", "libpq refuses it"),
        ("railway", "postgresql://"),
    ],
)
def test_a_malformed_database_url_stops_with_one_line_that_hides_it(
    monkeypatch: pytest.MonkeyPatch, url: str, why: str
) -> None:
    line = refusal(monkeypatch, DATABASE_URL=url)
    assert line.startswith("configuration error: DATABASE_URL=<hidden>: ")
    assert why in line and "secret" not in line


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://postgres:p%40ss@postgres.railway.internal:5432/railway",
        "postgres://u@localhost/app?sslmode=require",
    ],
)
def test_a_postgresql_url_is_taken(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("DATABASE_URL", url)
    settings = load(BulkSettings)
    assert settings.database_url is not None
    assert settings.database_url.get_secret_value() == url
    assert "p%40ss" not in repr(settings)


def test_every_setting_is_tried_with_a_bad_value() -> None:
    tried = {name for name, _ in BAD_VALUES} | FREE_FORM | TESTED_BELOW
    fields = [*config.Settings.model_fields, *BulkSettings.model_fields]
    untried = {name.upper() for name in fields} - tried
    assert not untried, f"add bad values for {sorted(untried)} to BAD_VALUES"


def test_each_bad_variable_gets_its_own_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT", "abc")
    monkeypatch.setenv("MEMORY_CLEANUP_INTERVAL", "-5")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert sorted(line.split("=")[0] for line in info.value.lines) == [
        "configuration error: MEMORY_CLEANUP_INTERVAL",
        "configuration error: PORT",
    ]
    assert str(info.value) == "\n".join(info.value.lines)


def test_short_admin_token_is_refused_and_never_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "s3cr3t-tok"
    monkeypatch.setenv("ADMIN_TOKEN", secret)
    with pytest.raises(ConfigError) as info:
        load_settings()
    line = only_line(info.value)
    assert line.startswith("configuration error: ADMIN_TOKEN=")
    assert "16" in line
    assert secret not in line
    assert secret not in str(info.value)
    assert secret not in repr(info.value)


def test_good_admin_token_is_kept_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "0123456789abcdef-long-enough"
    monkeypatch.setenv("ADMIN_TOKEN", secret)
    settings = load_settings()
    assert settings.admin_token is not None
    assert settings.admin_token.get_secret_value() == secret
    assert secret not in repr(settings)
    assert secret not in str(settings.model_dump())


@pytest.mark.parametrize(
    "value", ["0123456789abcdef\u00e9", "0123456789abcdef\u00a0", "0123456789 abcdef", "\t" * 16]
)
def test_admin_token_outside_printable_ascii_is_refused(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    # A header carries bytes: a non-ASCII token matches only one encoding of itself, and a space
    # or control character at its edge is stripped on the way.
    line = refusal(monkeypatch, ADMIN_TOKEN=value)
    assert line == (
        "configuration error: ADMIN_TOKEN=<hidden>: must be printable ASCII, '!' to '~' "
        "(no spaces, control or non-ASCII characters)"
    )


def test_every_printable_ascii_character_is_allowed_in_a_token(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    every = "".join(map(chr, range(0x21, 0x7F)))
    monkeypatch.setenv("ADMIN_TOKEN", every)
    token = load_settings().admin_token
    assert token is not None and token.get_secret_value() == every


@pytest.mark.parametrize(
    ("value", "kept"),
    [
        ("", "127.0.0.1,::1"),
        ("*", "*"),
        (" 100.64.0.0/10 , fd12::/16,10.0.0.7 ", "100.64.0.0/10,fd12::/16,10.0.0.7"),
    ],
)
def test_forwarded_allow_ips_is_normalised(
    monkeypatch: pytest.MonkeyPatch, value: str, kept: str
) -> None:
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", value)
    assert load_settings().forwarded_allow_ips == kept


def test_unknown_memory_profile_lists_the_allowed_names(monkeypatch: pytest.MonkeyPatch) -> None:
    line = refusal(monkeypatch, MEMORY_PROFILE="hoard")
    assert line.startswith("configuration error: MEMORY_PROFILE='hoard': ")
    names = load_profiles().names
    assert len(names) >= 2
    for name in names:
        assert name in line


def test_known_memory_profile_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMORY_PROFILE", "glibc-tuned")
    assert load_settings().memory_profile == "glibc-tuned"


def test_threshold_at_the_limit_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    line = refusal(monkeypatch, MEMORY_LIMIT_MB="100", MEMORY_CLEANUP_THRESHOLD_MB="100")
    assert line.startswith("configuration error: MEMORY_CLEANUP_THRESHOLD_MB=100 ")
    assert "100 MB" in line
    assert "MEMORY_LIMIT_MB" in line


def test_threshold_over_a_cgroup_limit_names_the_cgroup(
    monkeypatch: pytest.MonkeyPatch, cgroup_limit: list[int | None]
) -> None:
    cgroup_limit.append(64 * MB)
    line = refusal(monkeypatch)  # default threshold 100 MB over a 64 MB container
    assert "MEMORY_CLEANUP_THRESHOLD_MB=100" in line
    assert "64 MB" in line
    assert "cgroup" in line


def test_threshold_just_under_the_limit_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMORY_LIMIT_MB", "100")
    monkeypatch.setenv("MEMORY_CLEANUP_THRESHOLD_MB", "99.5")
    assert load_settings().memory_cleanup_threshold_mb == 99.5


def test_defaults_are_the_documented_ones(cgroup_limit: list[int | None]) -> None:
    settings = load_settings()
    assert (settings.host, settings.port, settings.web_concurrency) == ("0.0.0.0", 8000, 1)
    assert settings.log_level == "info"
    assert settings.memory_profile is None
    assert settings.memory_cleanup is True
    assert settings.memory_cleanup_interval == 60
    assert settings.memory_cleanup_threshold_mb == 100
    assert settings.memory_limit_mb is None
    assert settings.memory_idle_release_seconds == 5
    assert settings.admin_token is None
    assert (settings.threadpool_size, settings.shutdown_grace_seconds) == (40, 10)
    assert settings.switch_interval_ms == 5  # Python's own
    assert settings.limit_max_requests is None
    assert (settings.server, settings.workers_max_rss_mb) == ("uvicorn", None)
    assert settings.forwarded_allow_ips == "127.0.0.1,::1"  # Railway's edge address is unknown
    assert settings.api_docs is False


def test_jitter_without_a_request_limit_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    line = refusal(monkeypatch, LIMIT_MAX_REQUESTS_JITTER="100")
    assert line.startswith("configuration error: LIMIT_MAX_REQUESTS_JITTER=100 ")
    assert "LIMIT_MAX_REQUESTS:" in line


def test_request_limit_with_one_worker_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """One uvicorn worker ends the server with exit 0 at the limit; ON_FAILURE leaves it down."""
    line = refusal(monkeypatch, LIMIT_MAX_REQUESTS="500")
    assert line.startswith("configuration error: LIMIT_MAX_REQUESTS=500 needs WEB_CONCURRENCY >= 2")
    assert "exits 0" in line and "ON_FAILURE" in line


def test_request_limit_with_two_workers_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIMIT_MAX_REQUESTS", "500")
    monkeypatch.setenv("WEB_CONCURRENCY", "2")
    assert load_settings().limit_max_requests == 500


def test_request_limit_under_granian_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    line = refusal(monkeypatch, LIMIT_MAX_REQUESTS="500", WEB_CONCURRENCY="2", SERVER="granian")
    assert line.startswith("configuration error: LIMIT_MAX_REQUESTS=500 is uvicorn's")
    assert "WORKERS_MAX_RSS_MB" in line


def test_rss_limit_needs_granian(monkeypatch: pytest.MonkeyPatch) -> None:
    line = refusal(monkeypatch, WORKERS_MAX_RSS_MB="120")
    assert line.startswith("configuration error: WORKERS_MAX_RSS_MB=120 needs SERVER=granian")
    monkeypatch.setenv("SERVER", "granian")
    assert load_settings().workers_max_rss_mb == 120


def test_good_values_are_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    values = {
        "HOST": "127.0.0.1",
        "PORT": "8123",
        "WEB_CONCURRENCY": "3",
        "LOG_LEVEL": "DEBUG",
        "ACCESS_LOG": "false",
        "MEMORY_CLEANUP": "0",
        "MEMORY_CLEANUP_INTERVAL": "2.5",
        "MEMORY_CLEANUP_THRESHOLD_MB": "0",
        "MEMORY_LIMIT_MB": "2048",
        "MEMORY_IDLE_RELEASE_SECONDS": "0",
        "LIMIT_MAX_REQUESTS": "5000",
        "LIMIT_MAX_REQUESTS_JITTER": "500",
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    assert (settings.host, settings.port, settings.web_concurrency) == ("127.0.0.1", 8123, 3)
    assert settings.log_level == "debug"
    assert settings.access_log is False
    assert settings.memory_cleanup is False
    assert settings.memory_cleanup_interval == 2.5
    assert settings.memory_cleanup_threshold_mb == 0
    assert (settings.limit_mb, settings.limit_source) == (2048, "MEMORY_LIMIT_MB")
    assert settings.memory_idle_release_seconds == 0
    assert settings.limit_max_requests == 5000
    assert settings.limit_max_requests_jitter == 500


@pytest.mark.parametrize(
    "name",
    [
        "MEMORY_LIMIT_MB",
        "LIMIT_MAX_REQUESTS",
        "ADMIN_TOKEN",
        "MEMORY_PROFILE",
        "WORKERS_MAX_RSS_MB",
    ],
)
def test_empty_optional_variable_means_unset(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    # A dashboard often leaves a variable present but empty.
    monkeypatch.setenv(name, "")
    assert getattr(load_settings(), name.lower()) is None


def test_dotenv_file_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(
        "MEMORY_CLEANUP_INTERVAL=15\nADMIN_TOKEN=abcdefghijklmnopqrstuvwxyz\nUNRELATED=1\n"
    )
    settings = load_settings()
    assert settings.memory_cleanup_interval == 15
    assert settings.admin_token is not None
    assert settings.admin_token.get_secret_value() == "abcdefghijklmnopqrstuvwxyz"


def test_environment_wins_over_dotenv(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("MEMORY_CLEANUP_INTERVAL=15\n")
    monkeypatch.setenv("MEMORY_CLEANUP_INTERVAL", "30")
    assert load_settings().memory_cleanup_interval == 30


def test_bad_value_in_dotenv_is_reported_like_the_environment(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("MEMORY_CLEANUP_INTERVAL=abc\n")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert only_line(info.value).startswith("configuration error: MEMORY_CLEANUP_INTERVAL='abc'")


def test_dotenv_is_read_from_the_working_directory_only(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / ".env").write_text("MEMORY_CLEANUP_INTERVAL=15\n")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert load_settings().memory_cleanup_interval == 60


def test_limit_from_the_cgroup(cgroup_limit: list[int | None]) -> None:
    cgroup_limit.append(256 * MB)
    settings = load_settings()
    assert (settings.limit_mb, settings.limit_source) == (256, "cgroup")


def test_memory_limit_mb_wins_over_the_cgroup(
    monkeypatch: pytest.MonkeyPatch, cgroup_limit: list[int | None]
) -> None:
    cgroup_limit.append(256 * MB)
    monkeypatch.setenv("MEMORY_LIMIT_MB", "300")
    settings = load_settings()
    assert (settings.limit_mb, settings.limit_source) == (300, "MEMORY_LIMIT_MB")


@pytest.mark.parametrize("limit", ["no cgroup", None])
def test_fallback_limit_without_a_cgroup_limit(
    cgroup_limit: list[int | None], limit: str | None
) -> None:
    if limit is None:
        cgroup_limit.append(None)  # a cgroup without a limit ("max")
    settings = load_settings()
    assert (settings.limit_mb, settings.limit_source) == (500, "default")


def test_cgroup_is_read_once_per_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def fake() -> CgroupMemory:
        calls.append(1)
        return CgroupMemory(2, "/", 1024 * MB, None, None)

    monkeypatch.setattr(config, "read_cgroup_memory", fake)
    settings = load_settings()
    assert settings.limit_mb == settings.limit_mb == 1024
    assert settings.limit_source == "cgroup"
    assert len(calls) == 1


@pytest.mark.parametrize("name", ["MEMORY_LIMIT_MB", "MEMORY_RELEASE_MIN_MB", "CACHE_MAX_MB"])
def test_infinite_sizes_are_refused(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setenv(name, "inf")
    with pytest.raises(ConfigError) as info:
        load_configuration()
    assert only_line(info.value).startswith(f"configuration error: {name}='inf'")


# Variables that look like settings but are none: silently ignored, they would hide a typo.


def test_a_misspelt_setting_is_warned_about_naming_the_closest(tmp_path: Path) -> None:
    lines = near_misses(
        [config.Settings, BulkSettings],
        {"MEMORY_CLEANUP_INTERVALL": "5", "CACHE_TTL_SECOND": "1", "PATH": "/bin"},
        tmp_path / "absent.env",
    )
    assert lines == [
        "setting warning: CACHE_TTL_SECOND is not a setting and is ignored; "
        "did you mean CACHE_TTL_SECONDS?",
        "setting warning: MEMORY_CLEANUP_INTERVALL is not a setting and is ignored; "
        "did you mean MEMORY_CLEANUP_INTERVAL?",
    ]


def test_settings_and_other_prefixes_are_not_warned_about(tmp_path: Path) -> None:
    environ = {
        "MEMORY_CLEANUP_INTERVAL": "5",  # a setting
        "MEMORY_PROFILES_FILE": "/x.toml",  # read by the profiles loader
        "MAX_WORKERS": "4",  # not one of our prefixes
        "GRANIAN_RSS_SAMPLE_INTERVAL": "1",
    }
    assert near_misses([config.Settings, BulkSettings], environ, tmp_path / "absent.env") == []


def test_a_workload_prefix_is_checked_only_with_the_workload(tmp_path: Path) -> None:
    environ = {"BULK_CONCURENCY": "4"}
    assert near_misses([config.Settings], environ, tmp_path / "absent.env") == []
    (line,) = near_misses([config.Settings, BulkSettings], environ, tmp_path / "absent.env")
    assert line.endswith("did you mean BULK_CONCURRENCY?")


def test_a_misspelt_setting_in_dotenv_is_warned_about(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("ADMISSION_QUEUE_LIMIT=8\n")
    (line,) = near_misses([config.Settings], {}, env_file)
    assert line.startswith("setting warning: ADMISSION_QUEUE_LIMIT is not a setting")
    assert line.endswith("did you mean ADMISSION_QUEUE?")
