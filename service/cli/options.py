"""The options every `longdoc` command shares, and the Settings a command runs with.

A command builds its Settings once, from its options over the environment, and hands
them to whatever it calls (and, as variables, to the processes it starts); nothing
here changes this process's environment or the process-wide `get_settings()`, so one
command's options cannot leak into the next command or a test run in the same process.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from ingestion.documents.ocr import OcrMode
from service.config import Settings

# ctx.meta is one dict shared by a command's whole context chain: what the root's
# options put there, the subcommand's see.
_OVERRIDES = "longdoc.settings_overrides"
_SETTINGS = "longdoc.settings"


def _use_data_dir(ctx: typer.Context, data_dir: Path | None) -> Path | None:
    # Given at the root and again after the command name, the later one wins.
    if data_dir is not None:
        overrides: dict[str, Any] = ctx.meta.setdefault(_OVERRIDES, {})
        overrides["data_dir"] = Path(data_dir).expanduser().resolve()
    return data_dir


DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        envvar="LONGDOC_DATA_DIR",
        help="Where the embedded DB, blobs and api-key live.",
        callback=_use_data_dir,
    ),
]


def settings_of(ctx: typer.Context) -> Settings:
    """This command's Settings: the shared options over LONGDOC_ variables and the
    defaults, built on first use and the same for the rest of the command."""
    settings = ctx.meta.get(_SETTINGS)
    if not isinstance(settings, Settings):
        try:
            settings = Settings(**ctx.meta.get(_OVERRIDES, {}))
        except ValidationError as exc:
            raise settings_refused(exc) from None
        ctx.meta[_SETTINGS] = settings
    return settings


def settings_refused(exc: ValidationError) -> typer.Exit:
    """Say which setting is wrong and why, as LONGDOC_ variables name them (the stack
    check's reason names the compose service and its .env variables), not a traceback;
    exit status 2, so `docker compose up` stops at the one-shot migrate."""
    typer.secho("longdoc: the settings cannot start Longdoc:", err=True, fg="red")
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"])
        name = f"LONGDOC_{where.upper()}" if where else "settings"
        message = str(error["msg"]).removeprefix("Value error, ")
        typer.echo(f"  {name}: {message}", err=True)
    return typer.Exit(code=2)


# OCR of an upload, as `POST /v1/documents` and archive batches take it (`ocr=`,
# `ocr_languages=`): for `longdoc batch`, sent; for `longdoc route`, applied here.
OcrModeOption = Annotated[
    OcrMode | None,
    typer.Option(help="OCR of scanned pages: auto, force or off; default LONGDOC_OCR_MODE."),
]
OcrLanguagesOption = Annotated[
    str | None,
    typer.Option(help="Tesseract languages, e.g. deu+eng; default: each document's."),
]
