"""Receive a multipart upload by streaming it straight into the blob store.

FastAPI's `UploadFile` spools the whole body before the handler runs, so a 10 GB
upload would be on disk before we could refuse it. Here the body is parsed as it
arrives: bytes of the `file` field are hashed and written to a temp file, and the
request is cut off (413) the moment it passes the limit. Of the other fields, only
those the route names are kept (small values such as the Files API's `purpose`). A raw
body (`receive_body`: a message batch's JSON) goes the same way, through one `_Spool`.
"""

from __future__ import annotations

import hashlib
import os
import re
import unicodedata
from collections.abc import Callable

from fastapi import Request
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.api import body_limit
from service.blobstore import BlobStore
from service.documents import ReceivedFile
from service.errors import BadRequest, DomainError, Invalid, TooLarge, Unsupported

FIELD = "file"
# Multipart framing around the file (boundaries, part headers) is small; this bound
# lets us refuse an honest Content-Length before reading a byte.
_FRAMING_ALLOWANCE = 64 * 1024
_HEAD_BYTES = 64 * 1024
# A kept form field is a short value (a purpose, a number), never data.
_FIELD_BYTES = 1024
# Called with a kept field's name and value once it has arrived; raises to refuse it.
FieldCheck = Callable[[str, str], None]


class _TooLarge(Exception):
    pass


def multipart_body(**fields: dict[str, object]) -> dict[str, object]:
    """The OpenAPI request body of a route that takes its multipart upload with
    `receive_file` (FastAPI sees no body parameter): a binary `file`, and `fields`
    (name: JSON schema) also required."""
    properties: dict[str, object] = {"file": {"type": "string", "format": "binary"}, **fields}
    schema = {"type": "object", "required": list(properties), "properties": properties}
    return {
        "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}
    }


def clean_filename(raw: str | None) -> str:
    """Keep the last path component, printable characters only, at most 255 bytes."""
    name = (raw or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C")
    name = re.sub(r"\s+", " ", name).strip().lstrip(".")
    while len(name.encode()) > 255:
        name = name[:-1]
    return name or "upload"


class _Spool:
    """A body's bytes as they arrive (a multipart `file` field's, or a whole raw body):
    counted against `limit`, hashed, the head kept, written to a temp file of the store,
    which is gone again if receiving them fails."""

    def __init__(self, store: BlobStore, limit: int) -> None:
        self.limit = limit
        self.fd, self.tmp = store.temp_file()
        self.size = 0
        self.digest = hashlib.sha256()
        self.head = bytearray()

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.limit:
            raise _TooLarge
        self.digest.update(chunk)
        if len(self.head) < _HEAD_BYTES:
            self.head += chunk[: _HEAD_BYTES - len(self.head)]
        os.write(self.fd, chunk)  # whole: a regular file takes every byte at once

    async def fill(
        self,
        request: Request,
        feed: Callable[[bytes], object],
        end: Callable[[], None] | None = None,
        malformed: str | None = None,
    ) -> None:
        """Hand the request's body to `feed` chunk by chunk (then `end`), the temp file
        closed after. Past the limit a 413; with `malformed` (what the body is), what
        `feed` raises other than a refusal is a 400 malformed body."""
        try:
            try:
                async for chunk in request.stream():
                    feed(chunk)
                if end is not None:
                    end()
            finally:
                os.close(self.fd)
        except _TooLarge:
            self.tmp.unlink(missing_ok=True)
            raise _too_large(self.limit) from None
        except Exception as exc:
            self.tmp.unlink(missing_ok=True)
            if malformed is None or isinstance(exc, StarletteHTTPException | DomainError):
                raise
            raise BadRequest("malformed_body", f"malformed {malformed} body: {exc}") from None
        except BaseException:
            self.tmp.unlink(missing_ok=True)  # cancelled mid-body: nothing of it stays
            raise

    def received(self, filename: str, fields: dict[str, str] | None = None) -> ReceivedFile:
        return ReceivedFile(
            tmp_path=self.tmp,
            sha256=self.digest.hexdigest(),
            size=self.size,
            filename=filename,
            head=bytes(self.head),
            fields=fields or {},
        )


def _admit(request: Request, limit: int, framing: int = 0) -> None:
    """Refuse an honest Content-Length over the limit before reading a byte, and let
    this body past the API's JSON cap (it is counted as it arrives, as every body is)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit + framing:
        raise _too_large(limit)
    body_limit.allow(request, limit + framing)


class _FileSink:
    """Parser callbacks that route the `file` field's bytes to the spool."""

    def __init__(
        self, spool: _Spool, wanted: tuple[str, ...] = (), check: FieldCheck | None = None
    ) -> None:
        self.spool = spool
        self.wanted = wanted
        self.check = check
        self.fields: dict[str, bytearray] = {}
        self._field: str | None = None
        self.filename: str | None = None
        self.found = False
        # Set by the parser only at the closing boundary: a body that stops before it
        # (a client cut off mid-file) holds a prefix of the file, never the file.
        self.complete = False
        self._in_file = False
        self._header_name = bytearray()
        self._header_value = bytearray()
        self._headers: dict[bytes, bytes] = {}

    def on_part_begin(self) -> None:
        self._headers = {}
        self._in_file = False
        self._field = None

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        self._headers[bytes(self._header_name).lower()] = bytes(self._header_value)
        self._header_name.clear()
        self._header_value.clear()

    def on_headers_finished(self) -> None:
        _, params = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = params.get(b"name", b"").decode("utf-8", "replace")
        if name == FIELD and not self.found:
            self.found = self._in_file = True
            raw = params.get(b"filename")
            self.filename = raw.decode("utf-8", "replace") if raw is not None else None
        elif name in self.wanted and name not in self.fields:
            self._field = name
            self.fields[name] = bytearray()

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._field is not None:
            self._keep(data[start:end])
        if self._in_file:
            self.spool.write(data[start:end])

    def _keep(self, chunk: bytes) -> None:
        value = self.fields[self._field or ""]
        value += chunk
        if len(value) > _FIELD_BYTES:
            raise Invalid(
                "field_too_long",
                f"form field {self._field!r} is over {_FIELD_BYTES} bytes",
                field=f"body.{self._field}",
            )

    def on_part_end(self) -> None:
        if self._field is not None and self.check is not None:
            # As soon as the field is whole: a refused value costs no file transfer
            # when it comes first (the openai SDK sends `purpose` before `file`).
            self.check(self._field, _text(self._field, self.fields[self._field]))
        self._in_file = False
        self._field = None

    def on_end(self) -> None:
        self.complete = True


def _too_large(limit: int) -> TooLarge:
    return TooLarge(
        "upload_too_large", f"upload exceeds the limit of {limit} bytes; nothing was stored"
    )


async def receive_file(
    request: Request,
    store: BlobStore,
    limit: int,
    fields: tuple[str, ...] = (),
    check: FieldCheck | None = None,
) -> ReceivedFile:
    """The `file` field, streamed into a temp file of the store, and the values of
    the form `fields` named (the rest are skipped), each handed to `check` as soon as
    it has arrived."""
    ctype, params = parse_options_header(request.headers.get("content-type"))
    boundary = params.get(b"boundary")
    if ctype != b"multipart/form-data" or not boundary:
        raise Unsupported(
            "not_multipart",
            f"send multipart/form-data with the file in a field named {FIELD!r}",
        )
    # The file's own limit is counted as it arrives; the framing around it is small.
    _admit(request, limit, _FRAMING_ALLOWANCE)
    spool = _Spool(store, limit)
    sink = _FileSink(spool, fields, check)
    parser = MultipartParser(boundary, _callbacks(sink))  # type: ignore[arg-type]
    await spool.fill(request, parser.write, parser.finalize, malformed="multipart")
    return _finish(sink)


def _finish(sink: _FileSink) -> ReceivedFile:
    """The parsed upload, or the refusal of an incomplete one (its temp file gone)."""
    try:
        if not sink.complete:
            # python-multipart's finalize() does not check this itself.
            raise BadRequest(
                "truncated_body",
                "malformed multipart body: it ends before its closing boundary "
                "(truncated upload?); nothing was stored",
            )
        if not sink.found:
            raise Invalid("missing_file", f"no form field named {FIELD!r}", field=f"body.{FIELD}")
        kept = {name: _text(name, value) for name, value in sink.fields.items()}
    except DomainError:
        sink.spool.tmp.unlink(missing_ok=True)
        raise
    return sink.spool.received(clean_filename(sink.filename), kept)


def _text(name: str, value: bytearray) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise Invalid(
            "bad_field", f"form field {name!r} is not UTF-8 text", field=f"body.{name}"
        ) from None


def _callbacks(sink: _FileSink) -> dict[str, object]:
    return {
        "on_part_begin": sink.on_part_begin,
        "on_header_field": sink.on_header_field,
        "on_header_value": sink.on_header_value,
        "on_header_end": sink.on_header_end,
        "on_headers_finished": sink.on_headers_finished,
        "on_part_data": sink.on_part_data,
        "on_part_end": sink.on_part_end,
        "on_end": sink.on_end,
    }


async def receive_body(
    request: Request, store: BlobStore, limit: int, filename: str
) -> ReceivedFile:
    """The raw request body (a JSON document too large to hold, such as a message
    batch), streamed into a temp file of the store and cut off past `limit` bytes."""
    _admit(request, limit)
    spool = _Spool(store, limit)
    await spool.fill(request, spool.write)
    return spool.received(filename)
