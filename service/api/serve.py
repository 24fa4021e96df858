"""`python -m service.api.serve --host H --port P`: the API under uvicorn, its log
lines (uvicorn's access and error lines among them) through service/logs.py.

uvicorn's own CLI configures logging with its dictConfig before the app is imported,
and has no way to hand the choice to the app; here logging is set up first and uvicorn
is told to leave it alone (`log_config=None`)."""

from __future__ import annotations

import argparse
import sys

import uvicorn

from service.config import get_settings
from service.logs import setup_logging


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m service.api.serve")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    setup_logging(get_settings(), sys.stderr)
    uvicorn.run(
        "service.api.main:app", host=args.host, port=args.port, log_config=None, log_level="info"
    )


if __name__ == "__main__":
    main()
