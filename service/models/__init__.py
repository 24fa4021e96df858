"""The whole schema, SQLAlchemy 2.0 typed. Alembic migrations create it; nothing else does.

Designed up front for the routing and job issues: jobs, results, batches, vLLM
backends and KV leases exist now so later work adds columns, not tables.
"""

from service.models.batches import Batch, BatchItem
from service.models.columns import Base, PlanJSON, StepJSON, UTCDateTime, utcnow
from service.models.documents import Document, DocumentTokenCount
from service.models.files import File
from service.models.jobs import Backend, Job, KvLease, Result
from service.models.ocr import OcrPage, OcrUsage
from service.models.status import (
    BATCH_FINAL,
    FINAL,
    BatchItemStatus,
    BatchStatus,
    DeliveryStatus,
    DocumentStatus,
    FilePurpose,
    FileStatus,
    JobStatus,
)
from service.models.tenants import ApiKey, Tenant
from service.models.webhooks import WebhookDelivery, WebhookEndpoint

__all__ = [
    "BATCH_FINAL",
    "FINAL",
    "ApiKey",
    "Backend",
    "Base",
    "Batch",
    "BatchItem",
    "BatchItemStatus",
    "BatchStatus",
    "DeliveryStatus",
    "Document",
    "DocumentStatus",
    "DocumentTokenCount",
    "File",
    "FilePurpose",
    "FileStatus",
    "Job",
    "JobStatus",
    "KvLease",
    "OcrPage",
    "OcrUsage",
    "PlanJSON",
    "Result",
    "StepJSON",
    "Tenant",
    "UTCDateTime",
    "WebhookDelivery",
    "WebhookEndpoint",
    "utcnow",
]
