"""The notes workload's users: no shape of their own, the verifier runs them under its spike."""

from __future__ import annotations

from locust import FastHttpUser, between, task

NOTE = b"x" * 2048


class NoteTaker(FastHttpUser):
    wait_time = between(0.1, 0.5)

    @task(3)
    def add(self) -> None:
        self.client.post("/notes", data=NOTE, name="/notes")  # type: ignore[arg-type]

    @task(1)
    def count(self) -> None:
        self.client.get("/notes/count", name="/notes/count")
