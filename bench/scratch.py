"""A benchmark's temp dir: removed when the run ends, also when it is stopped."""

from __future__ import annotations

import contextlib
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def scratch_dir(prefix: str, keep: bool) -> Iterator[Path]:
    """A temp dir named `prefix`..., removed at the end (`keep`: kept, and said where),
    including when the run is stopped with SIGTERM."""
    scratch = Path(tempfile.mkdtemp(prefix=prefix))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the `finally` runs
    try:
        yield scratch
    finally:
        if keep:
            print(f"kept {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
