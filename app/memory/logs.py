"""Make the manager's lines show in a server that configures only its own loggers.

uvicorn, gunicorn and Granian set up handlers for their own loggers and leave the root logger
without one; Python's last resort then prints warnings only, and every INFO line of the manager
(its start, each run, each release) is lost. Where no handler would receive them, the package's
logger gets one of its own on stderr. Where the service configures logging itself, that wins.
"""

from __future__ import annotations

import logging

PACKAGE = __package__ or __name__.rpartition(".")[0]  # wherever the folder was copied to
FORMAT = "%(levelname)s:     [%(process)d] %(message)s"  # uvicorn's own layout


def show_logs(level: int = logging.INFO) -> bool:
    """Attach a stderr handler to the package logger when none would print its lines; True if
    one was attached."""
    logger = logging.getLogger(PACKAGE)
    if logger.hasHandlers():
        return False
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(FORMAT))
    logger.addHandler(handler)
    logger.setLevel(level)
    return True
