"""jemalloc's MALLOC_CONF, read back through ``mallctl("opt.<name>")``.

jemalloc takes its options from MALLOC_CONF once, at its first allocation. An option it does not
know, or a value it rejects, earns one "Invalid conf pair" line on stderr and the process runs
on without it: a service would run under a profile's name without the profile's settings. So
the options are read back from the allocator itself and compared with what was asked for.

The type of each ``opt.*`` value is fixed by jemalloc's ``src/ctl.c`` (``CTL_RO_NL_GEN(opt_...,
<type>)``); the table below holds those of 5.3.0 and 5.3.1. An option jemalloc knows but the
table does not is shown as known, not compared (its width alone does not say how to read it).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

# opt.<name> -> C type, from jemalloc 5.3.0 and 5.3.1 src/ctl.c.
BOOL, UNSIGNED, SIZE_T, SSIZE_T, INT64, UINT64, STRING = (
    "bool", "unsigned", "size_t", "ssize_t", "int64_t", "uint64_t", "const char *",
)


def _each(names: str, kind: str) -> dict[str, str]:
    return dict.fromkeys(names.split(), kind)


OPTION_TYPES: dict[str, str] = {
    **_each(
        (
            "abort abort_conf cache_oblivious trust_madvise confirm_conf hpa hpa_hugify_sync "
            "huge_arena_pac_thp retain background_thread stats_print zero utrace xmalloc "
            "experimental_infallible_new experimental_tcache_gc tcache prof prof_active "
            "prof_thread_active_init prof_accum prof_pid_namespace prof_gdump prof_final "
            "prof_leak prof_leak_error prof_stats prof_sys_thread_name "
            "disable_large_size_classes experimental_hpa_start_huge_if_thp_always "
            "experimental_hpa_enforce_hugify"
        ),
        BOOL,
    ),
    **_each(
        (
            "narenas tcache_nslots_small_min tcache_nslots_small_max tcache_nslots_large "
            "lg_tcache_flush_small_div lg_tcache_flush_large_div prof_bt_max "
            "debug_double_free_max_scan"
        ),
        UNSIGNED,
    ),
    **_each(
        (
            "hpa_hugification_threshold hpa_slab_max_alloc hpa_sec_nshards hpa_sec_max_alloc "
            "hpa_sec_max_bytes hpa_sec_bytes_after_flush hpa_sec_batch_fill_extra "
            "hpa_purge_threshold oversize_threshold max_background_threads tcache_max "
            "tcache_gc_incr_bytes tcache_gc_delay_bytes lg_extent_max_active_fit lg_prof_sample "
            "process_madvise_max_batch"
        ),
        SIZE_T,
    ),
    **_each(
        (
            "dirty_decay_ms muzzy_decay_ms lg_tcache_nslots_mul lg_prof_interval "
            "prof_recent_alloc_max lg_san_uaf_align experimental_hpa_max_purge_nhp"
        ),
        SSIZE_T,
    ),
    "mutex_max_spin": INT64,
    "stats_interval": INT64,
    **_each("hpa_hugify_delay_ms hpa_min_purge_interval_ms hpa_min_purge_delay_ms", UINT64),
    **_each(
        (
            "metadata_thp dss percpu_arena stats_print_opts stats_interval_opts junk thp "
            "prof_prefix prof_time_res zero_realloc hpa_hugify_style"
        ),
        STRING,
    ),
}
CTYPES: dict[str, Any] = {  # C type -> ctypes type
    BOOL: ctypes.c_bool,
    UNSIGNED: ctypes.c_uint,
    SIZE_T: ctypes.c_size_t,
    SSIZE_T: ctypes.c_ssize_t,
    INT64: ctypes.c_int64,
    UINT64: ctypes.c_uint64,
    STRING: ctypes.c_char_p,
}
# Spellings the conf parser accepts that set another option (src/jemalloc.c): lg_tcache_max:N
# sets opt.tcache_max to 2^N.
ALIASES: dict[str, tuple[str, Callable[[str], str]]] = {
    "lg_tcache_max": ("tcache_max", lambda value: str(1 << int(value, 0))),
}
# Shown on /debug/memory whether or not MALLOC_CONF names them: what decides how much memory
# jemalloc keeps and when it gives it back.
SHOWN = ("narenas", "background_thread", "dirty_decay_ms", "muzzy_decay_ms", "tcache", "thp")
UNKNOWN = "(unknown option)"
UNREAD = "(known, not read back)"

Read = Callable[[str], str | None]  # opt name -> value as text; None: jemalloc has no such option


@dataclass(frozen=True)
class OptionCheck:
    """One MALLOC_CONF pair against what jemalloc reports for it."""

    name: str
    asked: str
    in_effect: str  # the value read back, UNKNOWN or UNREAD

    @property
    def took(self) -> bool:
        if self.in_effect == UNREAD:
            return True  # known to jemalloc; its type is not in the table, so trust it
        if self.name == "narenas" and self.in_effect != UNKNOWN and _same(self.asked, "0"):
            return True  # 0 asks for the automatic count, which jemalloc then writes back
        return self.in_effect != UNKNOWN and _same(self.asked, self.in_effect)

    def describe(self) -> str:
        if self.in_effect == UNKNOWN:
            return f"{self.name}:{self.asked} (not an option this jemalloc knows)"
        return f"{self.name}:{self.asked} (in effect: {self.in_effect})"


def _same(asked: str, in_effect: str) -> bool:
    if asked == in_effect:
        return True
    try:  # jemalloc reads numbers with strtoumax/strtoimax, base 0: 0x10 is 16
        return int(asked, 0) == int(in_effect)
    except ValueError:
        return False


def parse_malloc_conf(text: str) -> list[tuple[str, str]]:
    """``key:value`` pairs in order; a pair without a colon keeps an empty value, which no
    option takes, so it is reported rather than dropped."""
    pairs = []
    for item in text.split(","):
        if item.strip():
            name, _, value = item.strip().partition(":")
            pairs.append((name, value))
    return pairs


def mallctl_reader(mallctl: Callable[..., int]) -> Read:
    """A reader over a ``mallctl`` function (already given its argtypes)."""

    def read(name: str) -> str | None:
        key = f"opt.{name}".encode()
        kind = OPTION_TYPES.get(name)
        if kind is None:
            # Asking without a buffer only looks the name up: 0 if jemalloc has it.
            return None if mallctl(key, None, None, None, 0) == errno.ENOENT else UNREAD
        value = CTYPES[kind]()
        size = ctypes.c_size_t(ctypes.sizeof(value))
        status = mallctl(key, ctypes.byref(value), ctypes.byref(size), None, 0)
        if status == errno.ENOENT:
            return None
        if status != 0:
            return UNREAD
        if kind == STRING:
            return (value.value or b"").decode(errors="replace")
        if kind == BOOL:
            return "true" if value.value else "false"
        return str(value.value)

    return read


def check_options(pairs: Iterable[tuple[str, str]], read: Read) -> list[OptionCheck]:
    """Each asked-for pair with what jemalloc has in effect; a later pair for the same name
    wins, as it does in jemalloc's own parser."""
    asked = dict(pairs)
    checks = []
    for name, value in asked.items():
        target, convert = ALIASES.get(name, (name, None))
        in_effect = read(target)
        if in_effect is None:
            checks.append(OptionCheck(name, value, UNKNOWN))
            continue
        if convert is not None:
            with contextlib.suppress(ValueError):  # not a number: compared as written
                value = convert(value)
        checks.append(OptionCheck(target, value, in_effect))
    return checks


def options_in_effect(checks: Iterable[OptionCheck], read: Read) -> dict[str, str]:
    """The options worth showing, then every one MALLOC_CONF named, as jemalloc reports them."""
    shown = {name: value for name in SHOWN if (value := read(name)) is not None}
    shown.update({check.name: check.in_effect for check in checks})
    return shown


def not_applied_line(
    checks: Iterable[OptionCheck], version: str, environ: Mapping[str, str]
) -> str | None:
    """One line naming MALLOC_CONF and every option that did not take, or None."""
    failed = [check.describe() for check in checks if not check.took]
    if not failed:
        return None
    return (
        f"MALLOC_CONF={environ.get('MALLOC_CONF', '')!r}: jemalloc {version} did not apply "
        f"{'; '.join(failed)}, and runs without it"
    )
