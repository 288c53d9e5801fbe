"""The login service's own users: each registers once, then logs in now and then and mostly
reads its own profile with its session. `python -m scripts.verify run --locustfile` runs them
under the verifier's spike-then-idle shape (loadtest/shape.py), so this file defines no shape."""

import secrets

from locust import FastHttpUser, between, task


class Member(FastHttpUser):
    wait_time = between(0.2, 1.0)

    def on_start(self) -> None:
        self.credentials = {"username": f"member-{secrets.token_hex(6)}",
                            "password": secrets.token_urlsafe(12)}  # fmt: skip
        self.client.post("/register", json=self.credentials)
        self.token = ""
        self.login()

    @task(2)
    def login(self) -> None:
        reply = self.client.post("/login", json=self.credentials)
        if reply.status_code == 200:
            self.token = reply.json()["token"]

    @task(6)
    def me(self) -> None:
        self.client.get("/me", headers={"Authorization": f"Bearer {self.token}"})

    @task(1)
    def health(self) -> None:
        self.client.get("/healthz")
