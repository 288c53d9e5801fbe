"""A throwaway PostgreSQL cluster, made with Debian's own initdb and pg_ctl: for the verifier's
runs of a setup with a database (`compare`'s `+postgres` row) and for the tests.

The server refuses to run as root, and CI runs as root: the cluster then belongs to an
unprivileged user (``nobody``) in a directory of its own. It listens on 127.0.0.1 on a free
port, with fsync off (a test cluster is thrown away) and trust authentication (loopback only).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

UNPRIVILEGED_USER = "nobody"


def postgres_bin() -> Path | None:
    """The newest /usr/lib/postgresql/<version>/bin with initdb and pg_ctl, or None."""
    found = [
        Path(initdb).parent
        for initdb in glob.glob("/usr/lib/postgresql/*/bin/initdb")
        if Path(initdb).with_name("pg_ctl").exists()
    ]
    return max(found, key=lambda path: int(path.parent.name), default=None)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Cluster:
    bin: Path
    root: Path  # data/, the socket and the log live here
    port: int
    uid: int | None  # the cluster's owner when the tests run as root
    gid: int | None

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / "server.log"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str) -> None:
        done = subprocess.run(
            [str(self.bin / args[0]), *args[1:]],
            user=self.uid, group=self.gid, capture_output=True, text=True, timeout=120,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{args[0]} failed ({done.returncode}): {done.stderr.strip()}")

    def init(self) -> None:
        self._run(
            "initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8",
            "--no-sync",
        )

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.root}"
            " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.log), "-w", "start")

    def stop(self) -> None:
        """Stop now (fast shutdown: clients are disconnected, committed data is kept)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def create_database(self) -> str:
        """A fresh empty database; its URL."""
        import psycopg  # the service's driver, only where a cluster is made

        name = f"t_{secrets.token_hex(6)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def destroy(self) -> None:
        with contextlib.suppress(RuntimeError):  # already stopped
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)


def make_cluster() -> Cluster:
    """A started cluster; RuntimeError if PostgreSQL is not installed or will not start."""
    bin_dir = postgres_bin()
    if bin_dir is None:
        raise FileNotFoundError(
            "PostgreSQL is not installed (Debian: apt-get install postgresql)"
        )
    root = Path(tempfile.mkdtemp(prefix="lms-pg-"))
    uid = gid = None
    if os.geteuid() == 0:  # the server will not run as root
        user = pwd.getpwnam(UNPRIVILEGED_USER)
        uid, gid = user.pw_uid, user.pw_gid
        os.chown(root, uid, gid)
    cluster = Cluster(bin_dir, root, free_port(), uid, gid)
    try:
        cluster.init()
        cluster.start()
    except BaseException:
        cluster.destroy()
        raise
    return cluster
