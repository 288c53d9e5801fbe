"""Allocator profiles, read from profiles/profiles.toml: the one place they are defined.

The launcher, the Railway configs' tests and the verifier all go through this module, so a profile's
variables are never written out twice.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

PROFILES_FILE = Path(__file__).resolve().parent.parent / "profiles" / "profiles.toml"
# The allocators a profile may name: what allocator.detect_allocator() recognises and can release.
ALLOCATORS = ("glibc", "jemalloc", "tcmalloc", "mimalloc")


class ProfileError(ValueError):
    """The profiles file or a profile name is wrong; the message is one line for an operator."""


@dataclass(frozen=True)
class Profile:
    name: str
    summary: str
    allocator: str
    preload: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    deploy: bool = True

    def environment(self, base: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
        """The environment to exec the server with, and the profile variables the base overrode.

        A variable the operator set explicitly wins over the profile's value, so a dashboard
        setting is never silently replaced; LD_PRELOAD is the exception, as the profile's library
        is prepended to whatever is already preloaded.
        """
        env = dict(base)
        kept = [k for k, v in self.env.items() if k in env and env[k] != v]
        for key, value in self.env.items():
            env.setdefault(key, value)
        if self.preload:
            # ld.so separates LD_PRELOAD entries with spaces or colons.
            entries = re.split(r"[:\s]+", env.get("LD_PRELOAD", ""))
            current = [p for p in entries if p and p != self.preload]
            env["LD_PRELOAD"] = " ".join([self.preload, *current])
        env["MEMORY_PROFILE"] = self.name
        return env, kept


@dataclass(frozen=True)
class ProfileSet:
    default: str
    profiles: Mapping[str, Profile]

    def get(self, name: str | None) -> Profile:
        chosen = name or self.default
        try:
            return self.profiles[chosen]
        except KeyError:
            allowed = ", ".join(self.profiles)
            raise ProfileError(
                f"MEMORY_PROFILE={chosen!r} is not a profile; allowed: {allowed}"
            ) from None

    @property
    def names(self) -> list[str]:
        return list(self.profiles)


def _parse_profile(name: str, raw: object) -> Profile:
    if not isinstance(raw, dict):
        raise ProfileError(f"profile {name!r}: must be a [profiles.{name}] table")
    allocator = raw.get("allocator")
    if allocator not in ALLOCATORS:
        raise ProfileError(f"profile {name!r}: allocator must be one of {', '.join(ALLOCATORS)}")
    env = raw.get("env", {})
    if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
        raise ProfileError(f"profile {name!r}: env must map names to strings")
    preload = raw.get("preload")
    if preload is not None and (not isinstance(preload, str) or "/" in preload):
        raise ProfileError(
            f"profile {name!r}: preload must be a bare soname such as libjemalloc.so.2"
        )
    deploy = raw.get("deploy", True)
    if not isinstance(deploy, bool):
        raise ProfileError(f"profile {name!r}: deploy must be true or false (unquoted)")
    if allocator != "glibc" and not preload:
        raise ProfileError(f"profile {name!r}: a {allocator} profile needs preload")
    return Profile(
        name=name,
        summary=str(raw.get("summary", "")),
        allocator=str(allocator),
        preload=preload,
        env=dict(env),
        deploy=deploy,
    )


def load_profiles(path: Path | None = None) -> ProfileSet:
    source = Path(path or os.environ.get("MEMORY_PROFILES_FILE") or PROFILES_FILE)
    try:
        data = tomllib.loads(source.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ProfileError(f"cannot read allocator profiles from {source}: {exc}") from exc
    raw_profiles = data.get("profiles")
    if not isinstance(raw_profiles, dict) or not raw_profiles:
        raise ProfileError(f"{source}: no [profiles.<name>] tables")
    profiles = {name: _parse_profile(name, raw) for name, raw in raw_profiles.items()}
    default = data.get("default")
    if not isinstance(default, str) or default not in profiles:
        raise ProfileError(f"{source}: default {default!r} is not one of the profiles")
    if not profiles[default].deploy:
        raise ProfileError(f"{source}: default {default!r} is a baseline, not a deployable profile")
    return ProfileSet(default=default, profiles=profiles)
