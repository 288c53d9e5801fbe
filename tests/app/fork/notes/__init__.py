"""Notes: a fork's workload of two routes, which declares the users that drive it."""

from __future__ import annotations

from collections import deque
from pathlib import Path

from fastapi import APIRouter, Request
from pydantic import Field
from pydantic_settings import BaseSettings

from app.config import MB, SETTINGS_CONFIG, load
from app.frame import Frame
from app.load import LocustUsers, WorkloadLoad
from app.memory import RouteCost

router = APIRouter(tags=["notes"])
notes: deque[bytes] = deque(maxlen=1000)  # bounded: the newest thousand


@router.post("/notes", status_code=201)
async def add_note(request: Request) -> dict[str, int]:
    notes.append(await request.body())
    return {"notes": len(notes)}


@router.get("/notes/count")
async def count_notes() -> dict[str, int]:
    return {"notes": len(notes)}


class NoteSettings(BaseSettings):
    model_config = SETTINGS_CONFIG
    notes_max_body_mb: float = Field(1.0, gt=0)  # NOTES_MAX_BODY_MB


class Notes:
    settings_type = NoteSettings
    load = WorkloadLoad(
        LocustUsers(
            Path(__file__).with_name("locustfile.py"),
            about="notes added and counted",
            heavy_names=("/notes",),
        )
    )

    def mount(self, frame: Frame) -> None:
        settings = load(NoteSettings)
        frame.app.include_router(router)
        frame.admit(
            [RouteCost("POST", "/notes", cost_factor=3.0)],
            max_body_bytes=int(settings.notes_max_body_mb * MB),
            limit_name="NOTES_MAX_BODY_MB",
        )
        frame.add_status("notes", lambda: {"count": len(notes)})
