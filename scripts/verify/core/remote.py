"""A deployed service, watched through the memory package's status route while the spike runs.

The route is what `memory.install(app, status_token=...)` mounts (this service serves it as
/debug/memory): token-protected, hidden from the schema, the same document in a lifted service.

Behind a load balancer each request reaches one replica, so every tick asks a few times and
files each answer under the replica (and worker pid) that gave it: several replicas come out as
separate series, judged separately.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from app.memory.document import NotAStatus, StatusDocument, read_status
from scripts.verify.core.errors import RunNotMade
from scripts.verify.core.kernel_peak import NOT_READ, KernelPeak
from scripts.verify.core.sampling import Sample
from scripts.verify.core.served import HEALTH_PATH, STATUS_PATH
from scripts.verify.core.stayed import Split, split_from_status

USER_AGENT = "lean-memory-verify/1"


def series_name(document: StatusDocument) -> str:
    """ "<replica id> pid <n>", or "pid <n>" where the platform sets no replica id."""
    pid = document["pid"]
    replica = document["replica_id"]
    return f"{replica} pid {pid}" if replica else f"pid {pid}"


def sample_from_debug(document: StatusDocument, t: float) -> Sample:
    cgroup = document["cgroup"]
    return Sample(
        t=t,
        series=series_name(document),
        rss_bytes=document["rss_bytes"],
        pss_bytes=document["pss_bytes"],
        uss_bytes=document["uss_bytes"],
        cgroup_usage_bytes=cgroup["usage_bytes"] if cgroup else None,
        cgroup_working_set_bytes=cgroup["working_set_bytes"] if cgroup else None,
        processes=1,
    )


class RemoteService:
    """The service at ``url``; ``probe`` returns one sample per distinct replica it reached."""

    def __init__(
        self,
        url: str,
        token: str,
        probes_per_tick: int = 3,
        timeout: float = 5.0,
        status_path: str = STATUS_PATH,
        health_path: str = HEALTH_PATH,
    ) -> None:
        self.base_url = url.rstrip("/")
        self.token = token
        self.status_path = status_path
        self.health_path = health_path
        self.probes_per_tick = probes_per_tick
        self.timeout = timeout
        self.last_document: StatusDocument | None = None

    def _get(self, path: str) -> tuple[int, bytes]:
        request = urllib.request.Request(
            f"{self.base_url}{path}",
            headers={"Authorization": f"Bearer {self.token}", "User-Agent": USER_AGENT},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def fetch(self, holdings: bool = False) -> StatusDocument:
        """The status; without the split of what the process holds unless ``holdings``: the
        sampler reads it every second, and the split allocates in the service it measures."""
        status, body = self._get(self.status_path + ("" if holdings else "?holdings=0"))
        if status != 200:
            raise OSError(f"{self.status_path} answered {status}")
        document = read_status(json.loads(body))  # NotAStatus is a ValueError
        self.last_document = document
        return document

    def check(self) -> StatusDocument:
        """One read before the run; the reasons a remote run cannot be made, spelled out."""
        route = f"{self.base_url}{self.status_path}"
        try:
            status, body = self._get(self.status_path)
        except OSError as exc:
            raise RunNotMade(f"{self.base_url} is not reachable: {exc}") from exc
        if status == 404:
            raise RunNotMade(
                f"{route} is 404: the memory status route is not mounted there; mount it with "
                "memory.install(app, status_token=...) (this service: set ADMIN_TOKEN), or "
                "name its path with --status-path"
            )
        if status in (401, 403):
            raise RunNotMade(f"{route} refused the token ({status})")
        if status != 200:
            raise RunNotMade(f"{route} answered {status}")
        try:
            raw = json.loads(body)
        except ValueError as exc:
            raise RunNotMade(f"{route} is not JSON: {exc}") from exc
        try:
            document = read_status(raw)
        except NotAStatus as exc:
            raise RunNotMade(f"{route} is not the memory package's status: {exc}") from None
        self.last_document = document
        return document

    def probe(self, t: float) -> list[Sample]:
        seen: dict[str, Sample] = {}
        errors: list[str] = []
        for _ in range(self.probes_per_tick):
            try:
                sample = sample_from_debug(self.fetch(), t)
            except (OSError, ValueError) as exc:
                errors.append(str(exc))
                continue
            seen.setdefault(sample.series, sample)
        if not seen and errors:
            raise OSError(errors[-1])
        return list(seen.values())

    def failure(self) -> str | None:
        return None  # a replica that dies shows up as a series that stops answering

    def split(self) -> Split | None:
        """The split one replica's status route gives; None where it gives none."""
        try:
            return split_from_status(self.fetch(holdings=True))
        except (OSError, ValueError, RunNotMade):
            return None

    def take_peak(self) -> KernelPeak:
        """The cgroup's high-water mark as the last status read gave it (one replica's, over
        its whole life: nothing can reset it from here); nothing where the route has none."""
        cgroup = self.last_document["cgroup"] if self.last_document else None
        peak = cgroup.get("peak_bytes") if cgroup else None  # absent from an older package
        return KernelPeak(cgroup_bytes=int(peak)) if isinstance(peak, int) else NOT_READ
