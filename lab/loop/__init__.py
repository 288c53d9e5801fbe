"""/healthz p99 while concurrent bulk posts run, two setups A B A B: `python -m lab.loop`."""
