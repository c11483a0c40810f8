"""Structured logs (structlog): JSON lines by default, readable console lines on a terminal."""

from __future__ import annotations

import logging
import os
import sys

import structlog


def configure_logging(stderr: bool = False) -> None:
    """Configure structlog and stdlib logging once per process.

    With `stderr=True` (MCP over stdio) nothing is ever written to stdout, which carries the protocol.
    """
    level = getattr(logging, os.environ.get("KAIZEN_LOG_LEVEL", "info").upper(), logging.INFO)
    stream = sys.stderr if stderr else sys.stdout
    as_json = os.environ.get("KAIZEN_LOG_JSON", "auto")
    use_json = as_json.lower() in ("1", "true", "yes") or (as_json == "auto" and not stream.isatty())
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=max(level, logging.WARNING), stream=stream, format="%(levelname)s %(name)s %(message)s")
