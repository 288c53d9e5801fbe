"""The idle-memory verifier's parts; `python -m scripts.verify` is the entry point."""
