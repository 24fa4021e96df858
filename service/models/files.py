"""Files of the Files API: batch request files, and the output files Longdoc writes."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, String, Text, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from service.models.columns import Base, status_enum, utcnow
from service.models.status import FilePurpose, FileStatus


class File(Base):
    """A file of the Files API (OpenAI's shape); its bytes live in the blob store
    under `blob_key`, one blob per file (not content-addressed: deleting a file
    never has to ask whether another shares its bytes)."""

    __tablename__ = "files"
    __table_args__ = (Index("ix_files_tenant_created", "tenant_id", "created_at"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    purpose: Mapped[FilePurpose] = mapped_column(status_enum(FilePurpose))
    filename: Mapped[str] = mapped_column(String(255))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    blob_key: Mapped[str] = mapped_column(String(200))
    status: Mapped[FileStatus] = mapped_column(status_enum(FileStatus), default=FileStatus.uploaded)
    status_details: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None]
