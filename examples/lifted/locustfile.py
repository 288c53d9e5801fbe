"""The lifted service's own users: `python -m scripts.verify run --locustfile` runs them under
the verifier's spike-then-idle shape (loadtest/shape.py), so this file defines no shape."""

from locust import FastHttpUser, between, task


class ReportReader(FastHttpUser):
    wait_time = between(0.05, 0.3)

    @task(5)
    def report(self) -> None:
        self.client.get("/report?rows=20000", name="/report")

    @task(1)
    def health(self) -> None:
        self.client.get("/healthz")
