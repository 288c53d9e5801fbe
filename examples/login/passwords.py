"""Password hashing with scrypt, a memory-hard function: each hash or check fills a 64 MiB block
(128 x r x n bytes with n = 2**16, r = 8) and frees it a fraction of a second later. That block is
the point of the example: larger than glibc's mmap threshold, it is mapped and unmapped at once,
so a sample a second rarely sees it, yet the kernel charges every one of them to the cgroup.

How many run at once is bounded (LOGIN_CONCURRENCY, default 4: 256 MiB at most), as a service
in a 500 MB container must: the threadpool alone would run 40, 2.5 GiB."""

from __future__ import annotations

import hashlib
import hmac
import os
import threading
from dataclasses import dataclass

N, R, P = 2**16, 8, 1
BLOCK_BYTES = 128 * R * N  # what one hash holds while it runs
MAX_MEMORY = BLOCK_BYTES + 32 * 1024 * 1024  # OpenSSL's cap on one call: the block and a margin
CONCURRENCY = int(os.environ.get("LOGIN_CONCURRENCY", "4"))

_running = threading.BoundedSemaphore(CONCURRENCY)


@dataclass(frozen=True)
class Stored:
    """What the service keeps of a password: its salt and digest, never the password."""

    salt: bytes
    digest: bytes


def _scrypt(password: str, salt: bytes) -> bytes:
    with _running:  # blocks a threadpool thread, not the event loop
        return hashlib.scrypt(
            password.encode(), salt=salt, n=N, r=R, p=P, maxmem=MAX_MEMORY, dklen=32
        )


def hash_password(password: str) -> Stored:
    salt = os.urandom(16)
    return Stored(salt, _scrypt(password, salt))


def check(password: str, stored: Stored) -> bool:
    """In constant time, so the answer's timing says nothing of the digest."""
    return hmac.compare_digest(_scrypt(password, stored.salt), stored.digest)
