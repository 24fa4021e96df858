"""OCR of a page by the `tesseract` command (Debian's ``tesseract-ocr``): the
``tesseract`` engine of `ocr.OcrOptions`.

Why a process when MuPDF links Tesseract in: PyMuPDF's wheels build it without
SIMD, while Debian's binary picks AVX2 or AVX-512 at run time: 1.6x (300 dpi) to
2.7x (150 dpi) the pages/s in one bench/ocr.py run, 0.88x and 0.83x of the bare
command line's, at the command line's character error rate (MuPDF's build reads
150 dpi renders slightly better: 0.006 against 0.008). The page is
rendered by MuPDF as the in-process engine renders it (same dpi), in gray, which
Tesseract would make of it anyway before binarising, and handed over as PNM on
stdin: no temporary file, no PNG encoding. One thread (OMP_THREAD_LIMIT=1): a
worker recognises one page per process, and Tesseract's OpenMP would otherwise
take every core for little gain. A page has a deadline (`Deadline`), shared by its
orientation trials; past it the command is killed and the page fails, where the
in-process engine could only run on until the task's limit.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pymupdf

_pymupdf: Any = pymupdf
COMMAND = "tesseract"


class TesseractFailed(Exception):
    """The command gave no text for the page; the message says why."""


@dataclass(frozen=True)
class Deadline:
    """When a page's recognition must be over, and the limit that set it."""

    limit_s: float
    at: float

    @classmethod
    def after(cls, limit_s: float) -> Deadline:
        return cls(limit_s, time.monotonic() + limit_s)

    def left(self) -> float:
        """Seconds left; raises once there are none."""
        left = self.at - time.monotonic()
        if left <= 0:
            raise self.passed()
        return left

    def passed(self) -> TesseractFailed:
        return TesseractFailed(f"tesseract passed the page's time limit of {self.limit_s:g} s")


@functools.cache
def find_tesseract() -> str | None:
    """The `tesseract` command's path (PATH looked up once per process), or None."""
    return shutil.which(COMMAND)


def recognise(page: Any, languages: str, dpi: int, tessdata: Path, deadline: Deadline) -> str:
    """The text `tesseract` reads on a PyMuPDF `page` rendered at `dpi` (as drawn,
    its /Rotate included), uncleaned. Raises `TesseractFailed`, or what MuPDF raises
    while rendering."""
    command = find_tesseract()
    if command is None:
        raise TesseractFailed(f"the {COMMAND} command is not on PATH")
    image = page.get_pixmap(dpi=dpi, colorspace=_pymupdf.csGRAY, alpha=False).tobytes("pnm")
    args = [command, "stdin", "stdout", "--tessdata-dir", str(tessdata)]
    args += ["-l", languages, "--dpi", str(dpi)]
    try:
        done: subprocess.CompletedProcess[bytes] = subprocess.run(
            args,
            input=image,
            capture_output=True,
            timeout=deadline.left(),
            env={**os.environ, "OMP_THREAD_LIMIT": "1"},
            check=False,
        )
    except subprocess.TimeoutExpired:
        # run() has killed and reaped the process: nothing is left behind.
        raise deadline.passed() from None
    if done.returncode != 0:
        raise TesseractFailed(_failure(done.returncode, done.stderr))
    return done.stdout.decode("utf-8", errors="replace")


def _failure(code: int, stderr: bytes) -> str:
    said = [ln.strip() for ln in stderr.decode("utf-8", errors="replace").splitlines()]
    first = next((ln for ln in said if ln), "")
    how = f"was killed by signal {-code}" if code < 0 else f"exited with {code}"
    return f"{COMMAND} {how}" + (f": {first}" if first else "")
