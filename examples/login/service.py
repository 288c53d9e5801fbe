"""A login service that lifted app/memory (`cp -r app/memory examples/login/memory`): large
short-lived blocks, as a memory-hard password hash makes them.

Why it is here: its memory is the opposite of the catalogue's (examples/catalogue). Few objects,
but every login fills a 64 MiB scrypt block for a fraction of a second (passwords.py), several at
once when logins overlap. What stays after a spike is little; what matters is the peak, which a
sample a second misses and the kernel does not: the verifier's cgroup and RSS peak columns
(docs/examples.md). The other routes are light, as most of a login service's traffic is.
"""

import os
import secrets
import threading

import passwords
from fastapi import FastAPI, Header, HTTPException
from memory import MB, CleanupConfig, MemoryManager
from pydantic import BaseModel, Field

users: dict[str, passwords.Stored] = {}
sessions: dict[str, str] = {}  # token -> user; one per user, so bounded by the users
_tokens: dict[str, str] = {}  # user -> their current token
_lock = threading.Lock()

app = FastAPI()
cleanup = CleanupConfig.from_env(threshold_bytes=32 * MB)  # the verifier's preset sets the interval
memory = MemoryManager(cleanup, limit_bytes=500 * MB, quiet_paths={"/healthz"}, namespace="login")
memory.add_status_source(
    "login", lambda: {"users": len(users), "sessions": len(sessions),
                      "hash_concurrency": passwords.CONCURRENCY}
)  # fmt: skip
memory.install(app, status_token=os.environ["ADMIN_TOKEN"])


class Credentials(BaseModel):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=8, max_length=256)


@app.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/register", status_code=201)
def register(body: Credentials) -> dict[str, str]:
    """Hashes the password once (a threadpool thread: sync routes run there, so hashes overlap)."""
    stored = passwords.hash_password(body.password)
    with _lock:
        if body.username in users:
            raise HTTPException(409, "that user exists")
        users[body.username] = stored
    return {"username": body.username}


@app.post("/login")
def login(body: Credentials) -> dict[str, str]:
    """Checks the password against its hash (one scrypt, 64 MiB) and opens a session, replacing
    the user's last one."""
    stored = users.get(body.username)
    if stored is None or not passwords.check(body.password, stored):
        raise HTTPException(401, "wrong username or password")
    token = secrets.token_urlsafe(24)
    with _lock:
        sessions.pop(_tokens.get(body.username, ""), None)
        sessions[token] = _tokens[body.username] = body.username
    return {"token": token}


@app.get("/me")
def me(authorization: str = Header("")) -> dict[str, str]:
    """The light route: a session looked up, no hash."""
    user = sessions.get(authorization.removeprefix("Bearer "))
    if user is None:
        raise HTTPException(401, "no session")
    return {"username": user}
