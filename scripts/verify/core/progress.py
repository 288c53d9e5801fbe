"""One progress line on stderr while a run goes on: rewritten in place on a terminal, otherwise
printed every ``every`` seconds so CI logs stay short."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from app.memory.measure import MB


class Progress:
    def __init__(
        self, label: str, total_seconds: float, stream: TextIO | None = None, every: float = 10.0
    ) -> None:
        self.label = label
        self.total_seconds = total_seconds
        self.stream = stream or sys.stderr
        self.every = every
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._last_print = 0.0
        self._peak = 0

    def line(self, phase: str, t: float, current: int | None) -> str:
        if current:
            self._peak = max(self._peak, current)
        memory = f"{current / MB:7.1f} MB (peak {self._peak / MB:.1f})" if current else "      - MB"
        return f"[{self.label}] {phase:<8} {t:5.0f}/{self.total_seconds:.0f} s  {memory}"

    def update(self, phase: str, t: float, current: int | None) -> None:
        text = self.line(phase, t, current)
        now = time.monotonic()
        if self.tty:
            self.stream.write(f"\r{text}\x1b[K")
            self.stream.flush()
        elif now - self._last_print >= self.every:
            self.stream.write(text + "\n")
            self.stream.flush()
            self._last_print = now

    def note(self, message: str) -> None:
        """A one-off line (the run's start, a phase change) that is never overwritten."""
        if self.tty:
            self.stream.write("\r\x1b[K")
        self.stream.write(f"[{self.label}] {message}\n")
        self.stream.flush()

    def finish(self) -> None:
        if self.tty:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
