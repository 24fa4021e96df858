"""Small random-weight models with the real KV-cache geometry of the models Longdoc routes to.

Gemma 4 and Llama 4 Scout are far too big for this machine, yet Longdoc's KV arithmetic
(ingestion/capacity/kv.py) must equal what vLLM computes for them. vLLM's KV accounting reads
only the attention geometry, so a model with the real text architecture
(Gemma4ForCausalLM / Llama4ForCausalLM), the real layer count, layer pattern,
window or chunk, KV heads, head dims and KV sharing, but hidden size 256, a few query
heads, a tiny MLP and random weights, gets the very same KV cache as the real one and
serves on the CPU in under a minute. tests/vllm/test_kv_geometry.py serves these.

Every KV number comes from the project's registry (ingestion/capacity/models.toml, through
ingestion/capacity/registry.py); nothing here restates a model's geometry.

    python build_geometry_models.py [--check] MODELS_DIR

MODELS_DIR holds the converted small models (scripts/build-vllm.sh) whose tokenizers
are reused; the geometry models go to MODELS_DIR/geometry/<name>/, each with a
SOURCE.json whose "recipe" digests everything the build reads (this script's recipe
version, the derived config, the tokenizer files). A folder whose recipe matches is
skipped; others are rebuilt in a scratch folder and renamed into place.

--check   only report: exit 0 when every model is up to date, 1 otherwise. It needs
          neither torch nor transformers, so the caller can run it with any Python 3.11
          and create the tools venv only when something must be built.

Weights are transformers' own initialisation under a fixed seed, saved in bfloat16:
byte-identical on rebuild with the same torch and transformers.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ingestion.capacity.registry import ModelSpec, get_model  # noqa: E402 (path set just above)

# Bump when what the build writes changes in a way the derived config does not show.
RECIPE = "longdoc-geometry-v1"
SEED = 0
HIDDEN = 256
# The MLP and the experts only have to exist: the KV cache never sees them.
GEMMA_MLP = 512
SCOUT_EXPERT_MLP = 128
SCOUT_DENSE_MLP = 256
# vLLM precomputes a RoPE cos/sin table of max_position_embeddings x head_dim floats:
# 5.4 GB and half a minute at Scout's 10M positions. Positions do not touch the KV
# cache; they only bound --max-model-len, so the served lengths stay below this.
MAX_POSITIONS = 262_144

# Folder name -> registry id: the models Longdoc routes to. Maverick is left out: its
# KV geometry is Scout's (the registry marks its pattern unconfirmed), so serving it
# would test nothing new for another minute of the tier.
GEOMETRY_MODELS: dict[str, str] = {
    "gemma-4-e2b": "google/gemma-4-E2B-it",
    "gemma-4-e4b": "google/gemma-4-E4B-it",
    "gemma-4-26b-a4b": "google/gemma-4-26B-A4B-it",
    "gemma-4-31b": "google/gemma-4-31B-it",
    "llama-4-scout": "meta-llama/Llama-4-Scout-17B-16E-Instruct",
}

# Converted small models (scripts/build-vllm.sh) whose tokenizers the geometry models
# reuse: Gemma 3's has Gemma 4's vocabulary size (262,144; identity not verified). The
# Llama 4 tokenizer is not converted here, so Scout gets SmolLM2's and a vocabulary of
# its size: the vocabulary does not touch the KV cache.
TOKENIZER_FROM = {"Gemma4": "gemma3-270m", "Llama4": "smollm2-135m-instruct"}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")

_GEMMA_LAYER = {"sliding": "sliding_attention", "full": "full_attention"}
_LLAMA_LAYER = {"chunked": "chunked_attention", "full": "full_attention"}


class BuildError(SystemExit):
    def __init__(self, message: str) -> None:
        super().__init__(f"build_geometry_models: error: {message}")


def log(message: str) -> None:
    print(f"build_geometry_models: {message}", file=sys.stderr, flush=True)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class Plan:
    name: str
    spec: ModelSpec
    family: str
    """"Gemma4" or "Llama4": which transformers config and model class."""
    config: dict[str, Any]
    """Keyword arguments of the transformers text config, JSON-serialisable."""
    tokenizer_dir: Path
    notes: tuple[str, ...]

    @property
    def architecture(self) -> str:
        return f"{self.family}ForCausalLM"

    def recipe(self) -> str:
        # Digest of everything the build reads, so a registry or tokenizer change
        # rebuilds the folder and an unchanged one is never rebuilt.
        payload = {
            "recipe": RECIPE,
            "seed": SEED,
            "architecture": self.architecture,
            "config": self.config,
            "tokenizer": {f: sha256_file(self.tokenizer_dir / f) for f in TOKENIZER_FILES},
        }
        digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
        return f"{RECIPE}+{digest[:16]}"


def _tokenizer_ids(tokenizer_dir: Path) -> dict[str, Any]:
    """Vocabulary size and special ids of the model the tokenizer comes from."""
    if not all((tokenizer_dir / f).is_file() for f in (*TOKENIZER_FILES, "config.json")):
        raise BuildError(f"no tokenizer in {tokenizer_dir}: run scripts/build-vllm.sh first")
    cfg = json.loads((tokenizer_dir / "config.json").read_text())
    return {k: cfg[k] for k in ("vocab_size", "bos_token_id", "eos_token_id", "pad_token_id")}


def _query_heads(spec: ModelSpec) -> int:
    # vLLM requires the query heads of every layer to be a multiple of its KV heads;
    # the least such number keeps q_proj/o_proj as small as the real KV heads allow.
    return math.lcm(*(g.kv_heads for g in spec.geometry))


def gemma4_plan(name: str, spec: ModelSpec, models: Path) -> Plan:
    kinds = spec.layer_kinds()
    if set(kinds) != {"sliding", "full"}:
        raise BuildError(f"{spec.hf_id}: a Gemma 4 geometry model needs sliding and full layers")
    sliding, full = spec.attention("sliding"), spec.attention("full")
    tokenizer_dir = models / TOKENIZER_FROM["Gemma4"]
    ids = _tokenizer_ids(tokenizer_dir)
    if ids["vocab_size"] != spec.vocab_size:
        raise BuildError(
            f"{spec.hf_id}: tokenizer in {tokenizer_dir} has {ids['vocab_size']} ids, "
            f"the registry says {spec.vocab_size}"
        )
    config = {
        **ids,
        "hidden_size": HIDDEN,
        "intermediate_size": GEMMA_MLP,
        "num_hidden_layers": spec.num_layers,
        "layer_types": [_GEMMA_LAYER[k] for k in kinds],
        "num_attention_heads": _query_heads(spec),
        "num_key_value_heads": sliding.kv_heads,
        "head_dim": sliding.head_dim,
        "sliding_window": sliding.window,
        # Explicit per-layer shapes rather than the hub's global_head_dim /
        # num_global_key_value_heads: those set the full layers' KV heads only when
        # attention_k_eq_v is true, and save_pretrained writes per_layer_config anyway.
        "per_layer_config": {
            i: {"head_dim": full.head_dim, "num_key_value_heads": full.kv_heads}
            for i, kind in enumerate(kinds)
            if kind == "full"
        },
        "attention_k_eq_v": spec.attention_k_eq_v,
        "num_kv_shared_layers": spec.kv_shared_layers,
        # The KV-sharing models (E2B, E4B) double the MLP of their shared layers, as the
        # published configs do, so vLLM loads them down the same path as the real ones.
        "use_double_wide_mlp": spec.kv_shared_layers > 0,
        # Per-layer embeddings (a vocab x layers table) only add weight.
        "hidden_size_per_layer_input": 0,
        "max_position_embeddings": min(spec.max_position_embeddings, MAX_POSITIONS),
        "tie_word_embeddings": True,
    }
    notes = (
        f"hidden size {HIDDEN}, {config['num_attention_heads']} query heads, "
        f"MLP {GEMMA_MLP}, dense (the KV cache does not see MoE), no per-layer embeddings",
        f"tokenizer: {tokenizer_dir.name}'s (Gemma 3; same vocabulary size as Gemma 4)",
    )
    return Plan(name, spec, "Gemma4", config, tokenizer_dir, notes)


def llama4_plan(name: str, spec: ModelSpec, models: Path) -> Plan:
    kinds = spec.layer_kinds()
    if set(kinds) != {"chunked", "full"}:
        raise BuildError(f"{spec.hf_id}: a Llama 4 geometry model needs chunked and full layers")
    chunked, full = spec.attention("chunked"), spec.attention("full")
    if (chunked.kv_heads, chunked.head_dim) != (full.kv_heads, full.head_dim):
        raise BuildError(f"{spec.hf_id}: Llama4TextConfig has one KV head shape for all layers")
    tokenizer_dir = models / TOKENIZER_FROM["Llama4"]
    ids = _tokenizer_ids(tokenizer_dir)
    config = {
        **ids,
        "hidden_size": HIDDEN,
        "intermediate_size": SCOUT_EXPERT_MLP,
        "intermediate_size_mlp": SCOUT_DENSE_MLP,
        "num_hidden_layers": spec.num_layers,
        # vLLM's llama4.py picks the attention kind from no_rope_layers: 0 = a global
        # NoPE (full) layer, 1 = chunked-local RoPE.
        "no_rope_layers": [0 if k == "full" else 1 for k in kinds],
        "attention_chunk_size": chunked.window,
        "num_attention_heads": _query_heads(spec),
        "num_key_value_heads": chunked.kv_heads,
        "head_dim": chunked.head_dim,
        "num_local_experts": 2,
        "num_experts_per_tok": 1,
        "interleave_moe_layer_step": 1,
        "use_qk_norm": True,
        # Default RoPE: Scout's llama3 scaling (low = high frequency factor) only makes
        # transformers warn, and positions do not touch the KV cache.
        "max_position_embeddings": min(spec.max_position_embeddings, MAX_POSITIONS),
        "tie_word_embeddings": False,
    }
    notes = (
        f"hidden size {HIDDEN}, {config['num_attention_heads']} query heads, "
        f"2 experts of {SCOUT_EXPERT_MLP} (top-1), dense MLP {SCOUT_DENSE_MLP}",
        f"tokenizer: {tokenizer_dir.name}'s, vocab_size {ids['vocab_size']} "
        f"(the registry's {spec.vocab_size} is Llama 4's; the KV cache does not see it)",
    )
    return Plan(name, spec, "Llama4", config, tokenizer_dir, notes)


def plan(name: str, models: Path) -> Plan:
    spec = get_model(GEOMETRY_MODELS[name])
    if spec.architecture.startswith("Gemma4"):
        p = gemma4_plan(name, spec, models)
    elif spec.architecture.startswith("Llama4"):
        p = llama4_plan(name, spec, models)
    else:
        raise BuildError(f"{spec.hf_id}: no geometry model for architecture {spec.architecture}")
    if spec.max_position_embeddings > MAX_POSITIONS:
        note = (
            f"max_position_embeddings {MAX_POSITIONS} instead of {spec.max_position_embeddings}"
            " (vLLM's RoPE table; the KV cache does not see it)"
        )
        p = replace(p, notes=(*p.notes, note))
    return p


def built_recipe(folder: Path) -> str | None:
    try:
        return str(json.loads((folder / "SOURCE.json").read_text())["recipe"])
    except (OSError, ValueError, KeyError):
        return None


def check_geometry(p: Plan, out: Path) -> None:
    """Read the written config back through transformers and compare every layer's KV
    shape with the registry, so a key transformers ignores fails the build."""
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(str(out))
    want = [(ly.kind, ly.kv_heads, ly.head_dim, ly.window) for ly in p.spec.layers()]
    if p.family == "Gemma4":
        kind_of = {v: k for k, v in _GEMMA_LAYER.items()}
        got = [
            (
                kind_of[t],
                lc.num_key_value_heads,
                lc.head_dim,
                cfg.sliding_window if t == "sliding_attention" else None,
            )
            for t, lc in zip(cfg.layer_types, cfg.per_layer_config, strict=True)
        ]
        shared = cfg.num_kv_shared_layers
    else:
        kind_of = {v: k for k, v in _LLAMA_LAYER.items()}
        got = [
            (
                kind_of[t],
                cfg.num_key_value_heads,
                cfg.head_dim,
                cfg.attention_chunk_size if t == "chunked_attention" else None,
            )
            for t in cfg.layer_types
        ]
        shared = 0
    if got != want or shared != p.spec.kv_shared_layers:
        raise BuildError(f"{p.name}: written config does not reproduce {p.spec.hf_id}'s layers")


def build(p: Plan, dest: Path, recipe: str) -> None:
    import torch
    import transformers

    t0 = time.monotonic()
    config_cls = getattr(transformers, f"{p.family}TextConfig")
    model_cls = getattr(transformers, p.architecture)
    torch.manual_seed(SEED)
    model = model_cls(config_cls(**p.config)).to(torch.bfloat16)
    params = sum(t.numel() for t in model.parameters())

    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{p.name}.build.", dir=dest.parent))
    try:
        out = work / "out"
        model.save_pretrained(str(out))
        del model
        for f in TOKENIZER_FILES:
            shutil.copyfile(p.tokenizer_dir / f, out / f)
        check_geometry(p, out)
        files = {}
        for f in sorted(out.iterdir()):
            f.chmod(0o644)  # save_pretrained writes safetensors 0600
            files[f.name] = sha256_file(f)
        spec = p.spec
        source = {
            "name": p.name,
            "label": f"{spec.name}: KV geometry only, random weights",
            "registry_id": spec.hf_id,
            "recipe": recipe,
            "architecture": p.architecture,
            "kv_geometry": {
                "pattern": spec.pattern,
                "layers": spec.num_layers,
                "kv_shared_layers": spec.kv_shared_layers,
                "attention_k_eq_v": spec.attention_k_eq_v,
                "kinds": {
                    g.kind: {"kv_heads": g.kv_heads, "head_dim": g.head_dim, "window": g.window}
                    for g in spec.geometry
                },
                "context": spec.max_position_embeddings,
            },
            "differs_from_real": list(p.notes),
            "built_by": {
                "script": "scripts/build_geometry_models.py",
                "registry": "ingestion/capacity/models.toml",
                "seed": SEED,
                "transformers": transformers.__version__,
                "torch": torch.__version__,
                "how": f"{p.architecture}({p.family}TextConfig(**config)) after "
                f"torch.manual_seed({SEED}), .to(bfloat16).save_pretrained",
            },
            "config": p.config,
            "parameters": params,
            "tokenizer_from": {
                "folder": p.tokenizer_dir.name,
                "recipe": built_recipe(p.tokenizer_dir),
            },
            "files": files,
        }
        tmp = out / ".SOURCE.json.tmp"
        tmp.write_text(json.dumps(source, indent=2) + "\n")
        os.replace(tmp, out / "SOURCE.json")
        # Readers only ever see a complete folder: the old one moves aside first.
        if dest.exists():
            dest.rename(work / "old")
        out.rename(dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    size = sum(f.stat().st_size for f in dest.iterdir())
    log(
        f"{p.name}: built {dest} in {time.monotonic() - t0:.1f}s "
        f"({params / 1e6:.0f}M parameters, {size / 1e6:.0f} MB)"
    )


def main(argv: list[str]) -> int:
    args = argv[1:]
    check_only = "--check" in args
    rest = [a for a in args if a != "--check"]
    if len(rest) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    models = Path(rest[0])
    root = models / "geometry"
    # What a killed build left behind.
    for leftover in root.glob(".*.build.*"):
        shutil.rmtree(leftover, ignore_errors=True)
    stale = []
    for name in GEOMETRY_MODELS:
        p = plan(name, models)
        recipe = p.recipe()
        if built_recipe(root / name) == recipe:
            log(f"{name}: up to date ({recipe})")
        else:
            stale.append((p, recipe))
    if check_only:
        for p, _ in stale:
            log(f"{p.name}: to build")
        return 1 if stale else 0
    for p, recipe in stale:
        build(p, root / p.name, recipe)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
