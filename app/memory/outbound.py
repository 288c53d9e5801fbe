"""The way out: a stored value sent a slice at a time, never copied whole per client.

(The slicing guard, the outbound budget part and the minimum data rates live beside this in the
full module; ``StoredResponse`` here is that module's, unchanged.)
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

log = logging.getLogger(__name__)

DEFAULT_SLICE_BYTES = 64 * 1024


class StoredResponse(Response):
    """A stored value sent a slice at a time, each slice read anew by ``read(offset, size)``.

    Nothing holds the whole value for the reader: a slow client costs one slice, and a value
    dropped from its store while it is being sent is not kept alive for it. ``read`` returns
    None once the value is gone; the reply then ends short (the server closes the connection, so
    the client sees a truncated body, never a wrong one).
    """

    def __init__(
        self,
        read: Callable[[int, int], bytes | None],
        length: int,
        media_type: str,
        slice_bytes: int = DEFAULT_SLICE_BYTES,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.read = read
        self.length = length
        self.slice_bytes = slice_bytes
        super().__init__(
            None, 200, {**(headers or {}), "content-length": str(length)}, media_type
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code,
             "headers": self.raw_headers}
        )
        offset = 0
        while offset < self.length and scope.get("method") != "HEAD":
            piece = self.read(offset, self.slice_bytes)
            if not piece:
                log.info(
                    "[memory-outbound] %s: stored value gone after %d of %d bytes; reply cut",
                    scope.get("path"), offset, self.length,
                )
                return
            offset += len(piece)
            await send(
                {"type": "http.response.body", "body": piece, "more_body": offset < self.length}
            )
        if offset == 0 or scope.get("method") == "HEAD":
            await send({"type": "http.response.body", "body": b"", "more_body": False})
