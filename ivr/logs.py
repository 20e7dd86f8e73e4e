"""structlog set-up: readable key=value lines on a terminal, JSON lines in production; stderr either way."""

from __future__ import annotations

import logging
import sys

import structlog

from ivr.ops.redact import redact_sensitive


class _StderrLogger:
    """Writes each line to the ``sys.stderr`` of the moment (a logger bound to the stream object of configure
    time would write to a closed file once a test harness or a CLI runner puts its own stream back)."""

    def msg(self, message: str) -> None:
        stream = sys.stderr
        try:
            stream.write(message + "\n")
            stream.flush()
        except (ValueError, OSError):
            pass  # stderr closed (interpreter shutting down): a log line is not worth an exception

    log = debug = info = warning = warn = error = critical = exception = fatal = failure = msg


def _stderr_logger(*args: object) -> _StderrLogger:
    return _StderrLogger()


def configure_logging(fmt: str = "console", level: str = "info") -> None:
    renderer: structlog.typing.Processor
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty(), pad_event_to=0)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            redact_sensitive,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=True,
    )
