"""The `--dtype` every vLLM CPU server Longdoc starts gets (service.backends.serving_dtype:
cpu_serving_dtype), and how discovery tells an fp32 pool from a bf16 one when vLLM
reports cache_dtype "auto" for both. No server is started here: the figures of a real
fp32 server are tests/vllm/test_kv_geometry.py's."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from ingestion.capacity.kv import KvConfig, kv_layout
from ingestion.capacity.registry import get_model
from service.backends.capacity import kv_dtype
from service.backends.discovery import resolve
from service.backends.probe import BackendState
from service.backends.server import VllmServer
from service.backends.serving_dtype import DTYPE_ENV, cpu_has_bf16, cpu_serving_dtype
from service.config import Settings
from service.deployment import BackendConfig
from service.jobs.planning import router_backends
from service.models import Backend as BackendRow

GIB = 1 << 30
SMOLLM2_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
# The first lines of /proc/cpuinfo of two x86 CPUs, one with AVX-512 BF16, one AVX2 only.
_CPU = "processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu vme sse2 avx avx2 {}\n\n"
BF16_CPU = _CPU.format("avx512f avx512_bf16 amx_tile") + "processor\t: 1\nflags\t: fpu\n"
AVX2_CPU = _CPU.format("fma f16c")


def cpuinfo(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cpuinfo"
    path.write_text(text)
    return path


def test_flags_decide(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DTYPE_ENV, raising=False)
    assert cpu_has_bf16(BF16_CPU) and not cpu_has_bf16(AVX2_CPU)
    assert not cpu_has_bf16(_CPU.format("avx512_bf16x"))  # whole flags only
    assert cpu_has_bf16(_CPU.format("amx_bf16"))
    assert cpu_serving_dtype(cpuinfo=cpuinfo(tmp_path, BF16_CPU)) == "bfloat16"
    assert cpu_serving_dtype(cpuinfo=cpuinfo(tmp_path, AVX2_CPU)) == "float32"
    # No flags line (not x86) or no file: nothing says bf16 is native.
    assert cpu_serving_dtype(cpuinfo=cpuinfo(tmp_path, "Features\t: bf16\n")) == "float32"
    assert cpu_serving_dtype(cpuinfo=tmp_path / "absent") == "float32"


def test_override_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bf16_cpu, avx2_cpu = cpuinfo(tmp_path, BF16_CPU), tmp_path / "avx2"
    avx2_cpu.write_text(AVX2_CPU)
    monkeypatch.setenv(DTYPE_ENV, "float32")
    assert cpu_serving_dtype(cpuinfo=bf16_cpu) == "float32"
    assert cpu_serving_dtype("bfloat16", cpuinfo=avx2_cpu) == "bfloat16"  # argument first
    monkeypatch.setenv(DTYPE_ENV, "auto")
    assert cpu_serving_dtype(cpuinfo=avx2_cpu) == "float32"
    monkeypatch.setenv(DTYPE_ENV, "float16")
    with pytest.raises(ValueError, match=DTYPE_ENV):
        cpu_serving_dtype(cpuinfo=bf16_cpu)
    # The setting reads the same variable, and a bad value is refused there too.
    monkeypatch.setenv(DTYPE_ENV, "float32")
    assert Settings().vllm_dtype == "float32"
    monkeypatch.setenv(DTYPE_ENV, "int8")
    with pytest.raises(ValueError, match="vllm_dtype"):
        Settings()


def test_server_command_carries_the_dtype(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def dtype_flag(**kwargs: str) -> str:
        server = VllmServer(
            python=Path("/venv/bin/python"),
            model_dir=Path("/models/m"),
            served_model_name="m",
            max_model_len=2048,
            log_path=tmp_path / "log",
            **kwargs,  # type: ignore[arg-type]
        )
        cmd = server.command()
        assert server.dtype == cmd[cmd.index("--dtype") + 1]
        return server.dtype

    monkeypatch.setenv(DTYPE_ENV, "float32")
    assert dtype_flag() == "float32"
    assert dtype_flag(dtype="bfloat16") == "bfloat16"
    monkeypatch.delenv(DTYPE_ENV)
    assert dtype_flag() == cpu_serving_dtype()


def _smollm2(blocks: int | None, reported: int | None, cache_dtype: str = "auto") -> BackendState:
    return BackendState(
        "http://x",
        SMOLLM2_ID,
        2048,
        block_size=128,
        num_blocks=blocks,
        kv_cache_bytes=reported,
        cache_dtype=cache_dtype,
    )


def _per_block(dtype: str) -> int:
    cfg = KvConfig.cpu(kv_dtype=dtype)  # type: ignore[arg-type]
    return kv_layout(get_model(SMOLLM2_ID), cfg).bytes_per_block


@pytest.mark.parametrize("dtype", ["bf16", "fp32"])
def test_auto_pool_dtype_from_its_blocks(dtype: str) -> None:
    """vLLM reports cache_dtype "auto" for a float32 server as for a bf16 one; the
    block count it cut the pool into says which."""
    plain = BackendConfig.model_validate({"role": "gemma", "url": "http://x"})
    per_block = _per_block(dtype)
    state = _smollm2(GIB // per_block, GIB)
    assert kv_dtype(state, plain) == dtype
    res = resolve(state, plain)
    assert (res.kv_dtype, res.kv_capacity_bytes) == (dtype, (GIB // per_block - 1) * per_block)
    assert res.capacity_source == "measured"


def test_auto_pool_dtype_without_bytes_or_match() -> None:
    plain = BackendConfig.model_validate({"role": "gemma", "url": "http://x"})
    fp32 = BackendConfig.model_validate({"role": "gemma", "url": "http://x", "kv_dtype": "fp32"})
    # No bytes (a GPU without --kv-cache-memory-bytes): configured, else bf16.
    assert kv_dtype(_smollm2(100, None), plain) == "bf16"
    res = resolve(_smollm2(100, None), fp32)
    assert (res.kv_dtype, res.kv_capacity_bytes) == ("fp32", 99 * _per_block("fp32"))
    assert res.capacity_source == "derived"
    # Blocks that fit neither dtype: bf16, as before fp32 was known.
    assert kv_dtype(_smollm2(7, GIB), plain) == "bf16"
    # Not in the registry: no block size to tell by.
    unknown = BackendState(
        "http://x", "a/b", 2048, block_size=128, num_blocks=182, kv_cache_bytes=GIB
    )
    assert kv_dtype(unknown, plain) is None
    # A set --kv-cache-dtype is what it says; one Longdoc does not account for is None.
    assert kv_dtype(_smollm2(182, GIB, "fp8_e5m2"), fp32) == "fp8"
    assert kv_dtype(_smollm2(182, GIB, "bfloat16"), plain) == "bf16"
    assert kv_dtype(_smollm2(182, GIB, "float16"), plain) is None


@pytest.mark.parametrize(
    ("found", "configured", "charged"),
    [
        ("fp32", None, "fp32"),
        ("fp32", "bf16", "fp32"),
        (None, "fp32", "fp32"),
        (None, None, "bf16"),
    ],
)
def test_admission_charges_the_found_dtype(
    found: str | None, configured: str | None, charged: str
) -> None:
    """The planner's KV config per backend: the dtype discovery wrote into the row
    (which already took a configured one where the server could not tell); rows
    written before there was one, the configured dtype, else bf16."""
    cfg: dict[str, object] = {"role": "gemma", "url": "http://x/"}
    if configured:
        cfg["kv_dtype"] = configured
    settings = Settings(backends=[BackendConfig.model_validate(cfg)])
    row = BackendRow(
        id=uuid.uuid4(),
        role="gemma",
        url="http://x",
        model=SMOLLM2_ID,
        max_model_len=2048,
        block_size=128,
        num_blocks=182,
        kv_capacity_bytes=181 * _per_block("fp32"),
        kv_dtype=found,
        healthy=True,
    )
    (backend,) = router_backends([row], settings)
    assert backend.kv.kv_dtype == charged
    assert backend.kv.block_size == 128
