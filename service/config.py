"""All configuration, in one pydantic-settings class (environment prefix ``LONGDOC_``).

With nothing set, Longdoc runs embedded: a SQLite file and a SQLite-backed Celery
transport under the data directory. Production sets ``LONGDOC_DATABASE_URL`` (Postgres)
and ``LONGDOC_BROKER_URL`` (Redis).
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel, Field, HttpUrl, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MODEL_ROLES = ("gemma", "scout")


def cache_dir() -> Path:
    """Where built assets (tokenizers, corpus, vLLM venv) live, outside any clone."""
    return Path(os.environ.get("LONGDOC_CACHE_DIR", Path.home() / ".cache" / "longdoc"))


def _default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME", str(Path.home() / ".local" / "share"))
    return Path(base) / "longdoc"


def _default_tokenizers() -> dict[str, Path]:
    root = cache_dir() / "tokenizers"
    return {"gemma": root / "gemma" / "tokenizer.json", "scout": root / "scout" / "tokenizer.model"}


class BackendConfig(BaseModel):
    """One vLLM server. Measured values come from the server; overrides are logged."""

    role: str
    url: HttpUrl
    max_model_len: int | None = Field(default=None, gt=0)
    kv_cache_bytes: int | None = Field(default=None, gt=0)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LONGDOC_", extra="ignore")

    data_dir: Path = Field(default_factory=_default_data_dir)
    database_url: str = ""
    broker_url: str = ""
    blob_dir: Path | None = None

    # Limits on what a client may hand us.
    max_upload_bytes: int = Field(default=256 * 1024 * 1024, gt=0)
    max_pages: int = Field(default=10_000, gt=0)
    max_text_pages_per_request: int = Field(default=500, gt=0)

    # Tokenizer file per model role; a role without a usable file falls back to
    # the backend's /tokenize, then to an estimate marked exact=false.
    tokenizers: dict[str, Path] = Field(default_factory=_default_tokenizers)
    backends: list[BackendConfig] = Field(default_factory=list)
    tokenize_timeout_s: float = Field(default=120.0, gt=0)
    backend_refresh_interval_s: float = Field(default=30.0, gt=0)
    backend_probe_timeout_s: float = Field(default=5.0, gt=0)

    # Worker timing. Celery's hard limit must stay below the broker's visibility
    # timeout, or Redis would hand a still-running task to a second worker.
    ingest_soft_time_limit_s: int = Field(default=1_500, gt=0)
    ingest_time_limit_s: int = Field(default=1_800, gt=0)
    broker_visibility_timeout_s: int = Field(default=3_600, gt=0)
    heartbeat_interval_s: float = Field(default=10.0, gt=0)
    stale_after_s: float = Field(default=60.0, gt=0)
    sweep_interval_s: float = Field(default=15.0, gt=0)
    max_parse_attempts: int = Field(default=3, gt=0)
    worker_concurrency: int = Field(default=1, gt=0)

    @model_validator(mode="after")
    def _derive_and_check(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite:///{self.data_dir / 'longdoc.db'}"
        if not self.broker_url:
            self.broker_url = f"sqla+sqlite:///{self.data_dir / 'broker.db'}"
        if self.blob_dir is None:
            self.blob_dir = self.data_dir / "blobs"
        if not self.ingest_soft_time_limit_s < self.ingest_time_limit_s:
            raise ValueError("ingest_soft_time_limit_s must be below ingest_time_limit_s")
        if not self.ingest_time_limit_s < self.broker_visibility_timeout_s:
            raise ValueError("ingest_time_limit_s must be below broker_visibility_timeout_s")
        if not self.heartbeat_interval_s < self.stale_after_s:
            raise ValueError("heartbeat_interval_s must be below stale_after_s")
        unknown = set(self.tokenizers) - set(MODEL_ROLES)
        if unknown:
            raise ValueError(f"unknown model roles in tokenizers: {sorted(unknown)}")
        for backend in self.backends:
            if backend.role not in MODEL_ROLES:
                raise ValueError(f"backend role must be one of {MODEL_ROLES}, got {backend.role!r}")
        return self

    @property
    def blobs(self) -> Path:
        assert self.blob_dir is not None  # set by the validator
        return self.blob_dir

    @property
    def embedded(self) -> bool:
        return self.database_url.startswith("sqlite")


@lru_cache
def get_settings() -> Settings:
    return Settings()
