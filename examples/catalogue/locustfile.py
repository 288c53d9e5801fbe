"""The catalogue's own users: shoppers browsing pages of a category, opening products and
looking at a category's summary. `python -m scripts.verify run --locustfile` runs them under the
verifier's spike-then-idle shape (loadtest/shape.py), so this file defines no shape."""

import random

from locust import FastHttpUser, between, task

CATEGORIES = 50  # as examples/catalogue/store.py
PRODUCTS = 100_000  # the service's default CATALOGUE_PRODUCTS


class Shopper(FastHttpUser):
    wait_time = between(0.05, 0.3)

    @task(4)
    def page(self) -> None:
        category = random.randrange(CATEGORIES)
        offset = random.choice((0, 0, 1000))  # a category holds 2,000
        self.client.get(f"/products?category={category}&offset={offset}&limit=2000",
                        name="/products")  # fmt: skip

    @task(8)
    def product(self) -> None:
        self.client.get(f"/products/{random.randrange(PRODUCTS)}", name="/products/[id]")

    @task(1)
    def summary(self) -> None:
        self.client.get(f"/categories/{random.randrange(CATEGORIES)}/summary",
                        name="/categories/[id]/summary")  # fmt: skip

    @task(1)
    def health(self) -> None:
        self.client.get("/healthz")
