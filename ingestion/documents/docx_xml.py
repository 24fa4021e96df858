"""Parsing Word's XML safely, as a stream of events into a parser target.

One parser configuration for every part: entities are never expanded, nothing
is fetched, no DTD is loaded and ``huge_tree`` stays off, so libxml2 refuses
any single token over ~10 MB; a DOCTYPE, which Word never writes, is refused.
"""

from __future__ import annotations

from typing import IO

from lxml import etree

from ingestion.types import IngestError

W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
FEED_BYTES = 64 * 1024
# libxml2's own limit for a tree (a parser target gets none); Word's deepest (a
# table in a text box in a table cell) is a few dozen.
MAX_DEPTH = 256


def xml_parser(target: object) -> etree.XMLParser:
    """The one way Word XML is parsed here: no entities, no network, no DTD, limits on."""
    return etree.XMLParser(
        target=target,
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        huge_tree=False,
    )


class Events:
    """Base of our parser targets: a DOCTYPE is refused; comments and PIs never arrive."""

    def doctype(self, name: str, public: str | None, system: str | None) -> None:
        raise IngestError(
            "corrupt", "the Word document's XML declares a DTD, which Word never does"
        )

    def close(self) -> None:
        return None


def too_deep() -> None:
    raise IngestError("corrupt", f"the Word document nests its XML deeper than {MAX_DEPTH}")


def feed(stream: IO[bytes], events: Events) -> None:
    """Parse `stream` into `events`, `FEED_BYTES` at a time."""
    parser = xml_parser(events)
    while chunk := stream.read(FEED_BYTES):
        parser.feed(chunk)
    parser.close()
