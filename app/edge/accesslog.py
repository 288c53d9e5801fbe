"""The access log: one line per request, with nothing a client can stretch, forge or leak.

uvicorn's own access log writes the query string as sent (tokens in it included) and the
X-Forwarded-For value whole (60 KB, quotes and all), so the launcher turns it off and this
middleware writes the line instead: query strings redacted, every client-supplied field escaped
to visible ASCII and cut to a bound, so a line never passes MAX_LINE_CHARS.
"""

from __future__ import annotations

import logging
import time
from urllib.parse import quote

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("app.access")

CLIENT_CHARS = 64  # "[ffff:...:ffff]:65535" is 47; X-Forwarded-For can say anything
METHOD_CHARS = 16
PATH_CHARS = 256
CUT_MARK_CHARS = 24  # "...(+NNNNNNNN chars)"
MAX_LINE_CHARS = CLIENT_CHARS + METHOD_CHARS + PATH_CHARS + 3 * CUT_MARK_CHARS + 64
REDACTED_QUERY = "?<redacted>"


def printable(text: str, limit: int) -> str:
    """`text` with every character outside visible ASCII, and `"` and `\\`, escaped, cut to
    `limit` characters with a count of what was left out: a log line cannot be split or faked.
    Only what is shown is looked at, so a 64 KB value costs no more than a short one."""
    shown: list[str] = []
    used = 0
    for index, char in enumerate(text):
        piece = char if "!" <= char <= "~" and char not in '"\\' else _escape(char)
        used += len(piece)
        if used > limit:
            return f"{''.join(shown)}...(+{len(text) - index} chars)"
        shown.append(piece)
    return "".join(shown)


def _escape(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else ascii(char)[1:-1]  # \uXXXX, \UXXXXXXXX


def _client(scope: Scope) -> str:
    client = scope.get("client")
    if not client:
        return "-"
    host, port = client
    return printable(f"{host}:{port}", CLIENT_CHARS)


def _path(scope: Scope) -> str:
    raw = scope.get("raw_path")
    path = raw.decode("latin-1") if raw else quote(scope.get("path", ""))
    query = REDACTED_QUERY if scope.get("query_string") else ""
    return printable(path, PATH_CHARS) + query


def access_line(scope: Scope, status: int | None, seconds: float) -> str:
    """The line for one request; `status` None when no answer was started."""
    method = printable(scope.get("method", "-"), METHOD_CHARS)
    version = printable(scope.get("http_version", "-"), 8)
    answer = "-" if status is None else str(status)
    return (
        f'{_client(scope)} - "{method} {_path(scope)} HTTP/{version}" {answer} '
        f"{seconds * 1000:.1f}ms"
    )


class AccessLogMiddleware:
    """Logs each HTTP request when its answer is done, with its status and duration."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not log.isEnabledFor(logging.INFO):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status: list[int] = []

        async def record(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, record)
        except Exception:
            if not status:
                status.append(500)  # what the error middleware outside answers
            raise
        finally:
            log.info(
                "%s",
                access_line(scope, status[0] if status else None, time.perf_counter() - started),
            )
