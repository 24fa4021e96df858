"""The parsed-document interface every format backend implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from types import TracebackType

from ingestion.types import DocumentInfo, IngestError, PageText


class ParsedDocument(ABC):
    """An open document: `info` up front, then `pages()` one at a time.

    Use it as a context manager so the underlying file and library objects
    are released even when the caller stops iterating early.
    """

    info: DocumentInfo
    # The languages its pages are OCR'd in; None where a format is never OCR'd.
    ocr_languages: str | None = None

    def pages_wanting_ocr(self) -> tuple[int, ...]:
        """Numbers of the pages read so far that wanted OCR (`ocr.wants_ocr`), whether
        or not they got it; none for formats that are never OCR'd."""
        return ()

    def pages(self, start: int = 1) -> Iterator[PageText]:
        """Yield pages `start`..`page_count` in order; `start` resumes a broken-off parse."""
        last = self.info.page_count
        if not 1 <= start <= last + 1:
            raise ValueError(f"start must be between 1 and {last + 1}, not {start}")
        return self._pages(start)

    @abstractmethod
    def _pages(self, start: int) -> Iterator[PageText]: ...

    def close(self) -> None:  # noqa: B027 - an optional hook, not every backend holds files
        """Release resources; the default has none to release."""

    def __enter__(self) -> ParsedDocument:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def check_page_count(count: int, max_pages: int, unit: str = "pages") -> None:
    """Raise ``empty`` or ``too_many_pages`` before any page is read."""
    if count <= 0:
        raise IngestError("empty", "the document has no pages")
    if count > max_pages:
        raise IngestError(
            "too_many_pages", f"the document has {count} {unit}; the limit is {max_pages}"
        )
