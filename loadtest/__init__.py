"""The spike-then-idle shape any Locust users run under (loadtest/shape.py); the users are the
workload's own, declared beside it (app/load.py), or a --locustfile."""
