"""Settings are passed, not patched: a command's options reach what it calls and the
processes it starts without changing this process's environment or `get_settings()`;
importing the task modules reads no settings; one cache directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from service.backends import embedded
from service.cli.app import cli
from service.config import Settings, as_environment, get_settings
from service.queue import INGEST_TASK, JOB_TASK
from tests.conftest import REPO


def test_data_dir_reaches_the_command_and_nothing_else(tmp_path: Path) -> None:
    before_env, before = dict(os.environ), get_settings()
    # The database and broker follow the data directory only when not set: unset here.
    env = {"LONGDOC_DATABASE_URL": "", "LONGDOC_BROKER_URL": ""}
    result = CliRunner().invoke(cli, ["migrate", "--data-dir", str(tmp_path)], env=env)
    assert result.exit_code == 0, result.output
    assert f"sqlite:///{tmp_path / 'longdoc.db'}" in result.stdout
    assert (tmp_path / "longdoc.db").is_file()
    assert dict(os.environ) == before_env
    assert get_settings() is before and get_settings().data_dir != tmp_path


def test_a_child_built_from_as_environment_has_the_same_settings(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path / "data",
        cache_dir=tmp_path / "cache",
        backends=[{"role": "gemma", "url": "http://127.0.0.1:9/", "repetition_penalty": 1.1}],
        loop_guard=False,
        tenant_max_kv_share=0.25,
    )
    code = "from service.config import Settings; print(Settings().model_dump_json())"
    env = {**os.environ, **as_environment(settings), "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout
    assert json.loads(out) == json.loads(settings.model_dump_json())


def test_cache_dir_places_the_default_tokenizers(tmp_path: Path) -> None:
    tokenizers = Settings(cache_dir=tmp_path).tokenizers
    assert tokenizers == {
        "gemma": tmp_path / "tokenizers" / "gemma" / "tokenizer.json",
        "scout": tmp_path / "tokenizers" / "scout" / "tokenizer.model",
    }
    assert embedded.vllm_parts(tmp_path) is None  # nothing built there


def test_serving_gives_settings_that_use_the_embedded_server() -> None:
    base = Settings(backends=[])
    served = embedded.serving(base, "http://127.0.0.1:8123")
    (backend,) = served.backends
    assert (backend.role, str(backend.url)) == (embedded.ROLE, "http://127.0.0.1:8123/")
    assert backend.repetition_penalty == embedded.SAMPLING["repetition_penalty"]
    assert embedded.ROLE not in served.tokenizers and "scout" in served.tokenizers
    assert served.vllm_min_prefill_tokens_per_s == embedded.CPU_MIN_PREFILL_TOKENS_PER_S
    assert base.backends == [] and embedded.ROLE in base.tokenizers  # a copy, not a patch
    # An operator's own first-token speed stays.
    own = embedded.serving(Settings(vllm_min_prefill_tokens_per_s=55), "http://127.0.0.1:1")
    assert own.vllm_min_prefill_tokens_per_s == 55


def test_task_limits_come_from_the_worker_settings_not_the_import() -> None:
    code = (
        "import json, workers.app as w, workers.ingest.tasks, workers.jobs.tasks\n"
        "configured = w.app.configured\n"
        "w.app.finalize(auto=True)\n"
        "t = w.app.tasks\n"
        f"print(json.dumps([configured, t[{INGEST_TASK!r}].soft_time_limit,"
        f" t[{INGEST_TASK!r}].time_limit, t[{JOB_TASK!r}].soft_time_limit,"
        f" t[{JOB_TASK!r}].time_limit]))\n"
    )
    limits = {
        "LONGDOC_INGEST_SOFT_TIME_LIMIT_S": "71",
        "LONGDOC_INGEST_TIME_LIMIT_S": "72",
        "LONGDOC_JOB_SOFT_TIME_LIMIT_S": "73",
        "LONGDOC_JOB_TIME_LIMIT_S": "74",
    }
    env = {**os.environ, **limits, "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout
    # Not configured by importing the tasks; configured from the settings when finalized.
    assert json.loads(out) == [False, 71, 72, 73, 74]
