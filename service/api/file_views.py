"""Files as the Files API shows them: OpenAI's FileObject, list and delete bodies,
field for field, so the official SDKs parse them unchanged.

Ids go out as `file-<32 hex>` (OpenAI's look; the row's uuid underneath) and come
back through `parse_id`, where anything else is a plain 404: an id is opaque to
a client, so a malformed one names no file rather than being bad input.
"""

from __future__ import annotations

import uuid
from typing import Literal

from pydantic import BaseModel, Field

from service.errors import NotFound
from service.models import File, FilePurpose, FileStatus

PREFIX = "file-"


def file_id(row_id: uuid.UUID) -> str:
    return f"{PREFIX}{row_id.hex}"


def parse_id(raw: str) -> uuid.UUID:
    hex_part = raw.removeprefix(PREFIX)
    if len(raw) != len(PREFIX) + 32 or not raw.startswith(PREFIX):
        raise NotFound("not_found", "file not found")
    try:
        return uuid.UUID(hex=hex_part)
    except ValueError:
        raise NotFound("not_found", "file not found") from None


class FileObject(BaseModel):
    id: str = Field(examples=["file-0123456789abcdef0123456789abcdef"])
    object: Literal["file"] = "file"
    bytes: int
    created_at: int = Field(description="Unix seconds.")
    filename: str = Field(description="As uploaded, sanitized: last path part, printable.")
    purpose: FilePurpose
    status: FileStatus
    expires_at: int | None = Field(default=None, description="Unix seconds; null: never.")
    status_details: str | None = None


class FileList(BaseModel):
    object: Literal["list"] = "list"
    data: list[FileObject]
    first_id: str | None
    last_id: str | None
    has_more: bool


class FileDeleted(BaseModel):
    id: str
    object: Literal["file"] = "file"
    deleted: bool


def to_out(row: File) -> FileObject:
    return FileObject(
        id=file_id(row.id),
        bytes=row.size_bytes,
        created_at=int(row.created_at.timestamp()),
        filename=row.filename,
        purpose=row.purpose,
        status=row.status,
        expires_at=int(row.expires_at.timestamp()) if row.expires_at else None,
        status_details=row.status_details,
    )


def list_out(rows: list[File], has_more: bool) -> FileList:
    data = [to_out(r) for r in rows]
    return FileList(
        data=data,
        first_id=data[0].id if data else None,
        last_id=data[-1].id if data else None,
        has_more=has_more,
    )
