"""The Locust scenario of a traffic spike followed by silence (loadtest/locustfile.py)."""
