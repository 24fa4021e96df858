"""All configuration, in one pydantic-settings class (environment prefix ``LONGDOC_``).

With nothing set, Longdoc runs embedded: a SQLite file and a SQLite-backed Celery
transport under the data directory. Production sets ``LONGDOC_DATABASE_URL`` (Postgres)
and ``LONGDOC_BROKER_URL`` (Redis).
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from service import stack, stack_check
from service.config_groups import ApiLoadSettings, OcrSettings, WebhookSettings
from service.deployment import MODEL_ROLES, BackendConfig, DeploymentReplica, paper_deployment


def _default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME", str(Path.home() / ".local" / "share"))
    return Path(base) / "longdoc"


def _default_tokenizers(fields: dict[str, Any]) -> dict[str, Path]:
    root = Path(fields["cache_dir"]) / "tokenizers"
    return {"gemma": root / "gemma" / "tokenizer.json", "scout": root / "scout" / "tokenizer.model"}


class Settings(BaseSettings, OcrSettings, ApiLoadSettings, WebhookSettings):
    model_config = SettingsConfigDict(env_prefix="LONGDOC_", extra="ignore")

    data_dir: Path = Field(default_factory=_default_data_dir)
    # Built assets (tokenizer files, the vLLM venv and its models, the test corpus),
    # outside any clone; the scripts that build them read the same LONGDOC_CACHE_DIR.
    cache_dir: Path = Field(default_factory=lambda: Path.home() / ".cache" / "longdoc")
    database_url: str = ""
    broker_url: str = ""
    blob_dir: Path | None = None

    # Limits on what a client may hand us.
    max_upload_bytes: int = Field(default=256 * 1024 * 1024, gt=0)
    max_pages: int = Field(default=10_000, gt=0)
    max_text_pages_per_request: int = Field(default=500, gt=0)
    # A request file for the Batch API (POST /v1/files, purpose=batch): OpenAI's own
    # limit, so a file that its API takes is taken here too.
    max_batch_file_bytes: int = Field(default=200 * 1024 * 1024, gt=0)
    # What a request file may hold (service/batches/request_lines.py): OpenAI's
    # 50,000 requests, and a line's bytes (a job request is small; a longer line is
    # refused at validation without being held whole).
    batch_max_requests: int = Field(default=50_000, gt=0)
    batch_max_line_bytes: int = Field(default=1024 * 1024, gt=0)
    # A chat request's messages (`/v1/chat/completions` lines, service/jobs/chat.py): how
    # many, and their text in characters (bounded by the line too, in a request file).
    chat_max_messages: int = Field(default=1_000, gt=0)
    chat_max_chars: int = Field(default=1024 * 1024, gt=0)
    # A chat job whose messages but the last hold at least this many characters gets a
    # prefix key (ingestion/capacity/prefix.py): admission keeps the jobs sharing it on
    # one replica, whose prefix cache holds that opening. 2,048 characters are ~500
    # tokens, ~30 KV blocks of 16: below that a cache hit saves a few milliseconds of
    # prefill, not worth steering the jobs off the replica with the most room.
    chat_prefix_affinity_min_chars: int = Field(default=2_048, gt=0)

    # Blob store: a temp file (an upload or a parse in progress) that nothing has
    # written to for this long was left by a crash; the sweeper removes it. Above the
    # ingest hard time limit, so no running parse loses its text.
    temp_upload_max_age_s: float = Field(default=3_600.0, gt=0)

    # Archive batches (service/batches/archives.py): the archive's own upload limit,
    # and what it may hold (ingestion/archives ArchiveLimits; one entry's limit is
    # max_upload_bytes, as for a document uploaded alone).
    archive_max_upload_bytes: int = Field(default=4 * 1024**3, gt=0)
    archive_max_entries: int = Field(default=10_000, gt=0)
    archive_max_total_bytes: int = Field(default=4 * 1024**3, gt=0)
    archive_max_ratio: float = Field(default=100.0, gt=1)
    archive_max_path_length: int = Field(default=1024, gt=0)
    # How often a worker moves batches on (finalizing, completed, cancelled, expired).
    batch_advance_interval_s: float = Field(default=5.0, gt=0)
    # The most unfinished lines a batch results cursor carries (its holes; service/
    # batches/result_cursor.py): a call stops scanning before one more. Each is a line
    # number and a comma in the Longdoc-Next-Cursor header (base64: 8 bytes for a line of
    # 50,000), and httpx and uvicorn cap a header block at 16 KiB: hence the ceiling.
    batch_results_max_holes: int = Field(default=1_000, gt=0, le=1_000)

    # Tokenizer file per model role; a role without a usable file falls back to
    # the backend's /tokenize, then to an estimate marked exact=false.
    # (Declared after cache_dir: the default is built from it.)
    tokenizers: dict[str, Path] = Field(default_factory=_default_tokenizers)
    backends: list[BackendConfig] = Field(default_factory=list)
    # The deployment `longdoc route` plans against without a server (service/deployment.py).
    deployment: list[DeploymentReplica] = Field(default_factory=paper_deployment)
    # The compose stack's vLLM servers (service/stack.py), as docker-compose.yml writes
    # them from .env; those of stack_profiles (its COMPOSE_PROFILES) run. They give the
    # backends, tokenizers and deployment not set here, and are checked at start-up.
    stack_profiles: str = "gpu"
    vllm_stack: list[stack.StackServer] = Field(default_factory=list)
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
    # Prometheus (service/metrics): the API's GET /metrics answers without a key when
    # metrics_public (a scraper on the operators' network), else to an admin key only.
    # A worker serves its pool's counters on worker_metrics_port (0: none; 9809 in deploy/).
    metrics_public: bool = False
    worker_metrics_port: int = Field(default=0, ge=0, le=65_535)

    # Jobs. A job's task polls for admission (the KV ledger) for up to admission_wait_s,
    # then queues itself again so waiting jobs do not hold worker slots for ever. Its
    # KV lease expires lease_ttl_s after the last heartbeat (every heartbeat_interval_s).
    lease_ttl_s: float = Field(default=60.0, gt=0)
    admission_poll_s: float = Field(default=1.0, gt=0)
    admission_wait_s: float = Field(default=60.0, gt=0)
    job_soft_time_limit_s: int = Field(default=3_000, gt=0)
    job_time_limit_s: int = Field(default=3_300, gt=0)
    max_job_attempts: int = Field(default=3, gt=0)
    # A waiting job nobody polls for gets a new task after this long (its message
    # may be queued behind busy workers, so not at once).
    job_redispatch_after_s: float = Field(default=300.0, gt=0)
    # A job fails when no replica of its role has been up for this long while it waited.
    backend_down_timeout_s: float = Field(default=900.0, gt=0)
    max_output_retries: int = Field(default=2, ge=0)
    max_output_tokens: int = Field(
        default=131_072, gt=0, description="The largest output budget a client may ask for."
    )
    # A job whose document must be split is planned by the API only up to this much
    # text; larger ones are planned by the worker (chunk counts take seconds there).
    api_split_max_text_bytes: int = Field(default=4 * 1024 * 1024, ge=0)
    # The vLLM client: retries within one attempt, and timeouts sized to the prompt.
    vllm_connect_timeout_s: float = Field(default=5.0, gt=0)
    vllm_read_timeout_s: float = Field(default=120.0, gt=0)
    vllm_max_retries: int = Field(default=3, ge=0)
    vllm_backoff_s: float = Field(default=1.0, ge=0)
    # Slowest prefill to wait for before the first token. A GPU does thousands/s; a
    # CPU server 700-1,100/s with bf16 hardware, ~30/s on AVX2 alone (the embedded
    # server sets 10).
    vllm_min_prefill_tokens_per_s: float = Field(default=200.0, gt=0)
    # An output that starts to loop (ingestion/tasks/repetition.py) is stopped and asked again
    # once with at least this repetition penalty; a second loop is kept, cut, with a
    # warning. False: let outputs run to their budget.
    loop_guard: bool = True
    loop_retry_repetition_penalty: float = Field(default=1.2, gt=1, le=2)
    # Expected speeds, for the admission policy's end-time estimates only.
    est_prefill_tokens_per_s: float = Field(default=5_000.0, gt=0)
    est_decode_tokens_per_s: float = Field(default=30.0, gt=0)

    # Fairness between tenants (README "Routing and KV-cache budgeting"). Queued: a
    # tenant's own jobs that are not final and have no request running; over it, job
    # creation answers 429 with Retry-After. Running and the KV share count map-reduce
    # requests, per role; the share holds only while another tenant waits there.
    tenant_max_queued_jobs: int = Field(default=1_000, gt=0)
    tenant_max_running_jobs: int = Field(default=32, gt=0)
    tenant_max_kv_share: float = Field(default=0.5, gt=0, le=1)
    tenant_retry_after_s: int = Field(default=30, gt=0)
    # Batch jobs yield to interactive ones (admission and broker priority) for at most
    # this long; a batch job that has waited longer is aged and goes first.
    batch_max_wait_s: float = Field(default=3600.0, gt=0)

    # Request bodies: every JSON route reads at most this much, counted as it arrives
    # (chunked or not); an extract schema or classify labels run to some 100 KB. Uploads
    # have their own limit, max_upload_bytes.
    max_json_body_bytes: int = Field(default=1024 * 1024, gt=0)

    # Time and failing servers (issue 9, B6/B7). A request must fit in the job time
    # limit at the slowest speeds served (prefill at vllm_min_prefill_tokens_per_s,
    # decode at vllm_min_decode_tokens_per_s), after up to admission_wait_s of polling;
    # a plan that cannot is refused (422 bad_budget). A failing /tokenize is tried
    # tokenize_attempts times (backoff doubling from tokenize_backoff_s).
    vllm_min_decode_tokens_per_s: float = Field(default=20.0, gt=0)
    tokenize_attempts: int = Field(default=3, gt=0)
    tokenize_backoff_s: float = Field(default=1.0, ge=0)

    # `longdoc serve` with no backends configured starts a vLLM CPU server on SmolLM2
    # 135M (service/backends/embedded.py) when `make vllm` has built it; false (or
    # `serve --no-vllm`) skips it. Its context (the model's own is 8,192) and KV cache.
    embedded_vllm: bool = True
    embedded_vllm_max_model_len: int = Field(default=8_192, gt=0)
    embedded_vllm_kv_gib: int = Field(default=1, gt=0)
    # ~40 s on two cores; more on a loaded machine.
    embedded_vllm_ready_timeout_s: float = Field(default=300.0, gt=0)
    # The weights' dtype of every vLLM CPU server Longdoc starts (the embedded one, the
    # tests'): auto = bfloat16 on a CPU with bf16 instructions (avx512_bf16, amx_bf16),
    # float32 elsewhere (service/backends/serving_dtype.py: cpu_serving_dtype).
    vllm_dtype: Literal["auto", "bfloat16", "float32"] = "auto"
    # Log lines (service/logs.py): `json`, one object a line; `text`; or `auto`, text
    # when the stream is a terminal and JSON otherwise (a file, a pipe, a container log).
    log_format: Literal["auto", "json", "text"] = "auto"

    @model_validator(mode="after")
    def _derive_and_check(self) -> Settings:  # noqa: C901
        if not self.database_url:
            self.database_url = f"sqlite:///{self.data_dir / 'longdoc.db'}"
        if not self.broker_url:
            self.broker_url = f"sqla+sqlite:///{self.data_dir / 'broker.db'}"
        if self.blob_dir is None:
            self.blob_dir = self.data_dir / "blobs"
        if self.webhook_allow_private is None:
            self.webhook_allow_private = self.embedded
        self.max_concurrent_requests = self.max_concurrent_requests or self.api_threads
        self.db_pool_size = self.db_pool_size or self.max_concurrent_requests + 3
        if not self.ingest_soft_time_limit_s < self.ingest_time_limit_s:
            raise ValueError("ingest_soft_time_limit_s must be below ingest_time_limit_s")
        self.ocr_max_seconds_per_document = (
            self.ocr_max_seconds_per_document or 0.6 * self.ingest_soft_time_limit_s
        )
        if not self.ocr_max_seconds_per_document < self.ingest_soft_time_limit_s:
            raise ValueError("ocr_max_seconds_per_document must be below ingest_soft_time_limit_s")
        if not self.ocr_slice_time_limit_s < self.broker_visibility_timeout_s:
            raise ValueError(
                "ocr_page_time_limit_s x ocr_slice_pages + 30 must be below"
                " broker_visibility_timeout_s"
            )
        if not self.ingest_time_limit_s < self.broker_visibility_timeout_s:
            raise ValueError("ingest_time_limit_s must be below broker_visibility_timeout_s")
        if not self.job_soft_time_limit_s < self.job_time_limit_s:
            raise ValueError("job_soft_time_limit_s must be below job_time_limit_s")
        if not self.job_time_limit_s < self.broker_visibility_timeout_s:
            raise ValueError("job_time_limit_s must be below broker_visibility_timeout_s")
        if not self.ingest_time_limit_s < self.temp_upload_max_age_s:
            raise ValueError("temp_upload_max_age_s must be above ingest_time_limit_s")
        if not self.heartbeat_interval_s < self.lease_ttl_s:
            raise ValueError("heartbeat_interval_s must be below lease_ttl_s")
        if not self.heartbeat_interval_s < self.stale_after_s:
            raise ValueError("heartbeat_interval_s must be below stale_after_s")
        unknown = set(self.tokenizers) - set(MODEL_ROLES)
        if unknown:
            raise ValueError(f"unknown model roles in tokenizers: {sorted(unknown)}")
        for backend in self.backends:
            if backend.role not in MODEL_ROLES:
                raise ValueError(f"backend role must be one of {MODEL_ROLES}, got {backend.role!r}")
        return self

    @field_validator("vllm_stack")
    @classmethod
    def _stack_can_run(
        cls, servers: list[stack.StackServer], info: ValidationInfo
    ) -> list[stack.StackServer]:
        # A field's check, so that a refusal names LONGDOC_VLLM_STACK.
        stack_check.check(stack.running(servers, info.data.get("stack_profiles", "")))
        return servers

    @model_validator(mode="after")
    def _from_stack(self) -> Settings:
        if not self.vllm_stack:
            return self
        servers = stack.active(self.vllm_stack, self.stack_profiles)
        if "backends" not in self.model_fields_set:
            self.backends = [BackendConfig.model_validate(b) for b in stack.backends(servers)]
        if "tokenizers" not in self.model_fields_set:
            stand_ins = stack.stand_in_roles(servers)
            self.tokenizers = {r: p for r, p in self.tokenizers.items() if r not in stand_ins}
        planned = stack.deployment(servers)
        if "deployment" not in self.model_fields_set and planned is not None:
            self.deployment = planned
        return self

    @property
    def blobs(self) -> Path:
        assert self.blob_dir is not None  # set by the validator
        return self.blob_dir

    @property
    def embedded(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def webhook_private_allowed(self) -> bool:
        assert self.webhook_allow_private is not None  # set by the validator
        return self.webhook_allow_private


def as_environment(settings: Settings) -> dict[str, str]:
    """`settings` as LONGDOC_ variables, for a child process (the worker and the API that
    `longdoc serve` starts): from these it builds the same Settings. Every field is
    written, so none falls back to whatever the parent's own environment said."""
    env = {}
    for name, value in settings.model_dump(mode="json").items():
        text = value if isinstance(value, str) else json.dumps(value)
        env[f"LONGDOC_{name.upper()}"] = text
    return env


@lru_cache
def get_settings() -> Settings:
    """The settings of a server process (the API, a worker), from its environment, read
    once. Commands and code that are handed a Settings use that one instead."""
    return Settings()
