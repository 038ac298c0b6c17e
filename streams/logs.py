"""Structured logs, with card numbers masked before any handler sees a record.

Masking happens in the log record factory, so it covers every logger (ours and
any library's) whatever handlers they have.
"""

from __future__ import annotations

import json
import logging
import traceback

from schemas.cards import mask_pans

_installed = False


def _masking_factory(base):  # type: ignore[no-untyped-def]
    def factory(*args, **kwargs):  # type: ignore[no-untyped-def]
        record = base(*args, **kwargs)
        try:
            message, n = mask_pans(record.getMessage())
        except Exception:  # bad format args: logging would print them raw to stderr
            message, n = mask_pans(f"{record.msg!s} (log args do not match the format: {record.args!r})")[0], 1
        if n:
            record.msg, record.args = message, ()
        if record.stack_info:
            record.stack_info = mask_pans(record.stack_info)[0]
        if record.exc_info and record.exc_info[0] is not None:
            # Pre-render the traceback masked; formatters reuse exc_text as is.
            record.exc_text = mask_pans("".join(traceback.format_exception(*record.exc_info)).rstrip())[0]
        return record

    return factory


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": f"{self.formatTime(record, '%Y-%m-%dT%H:%M:%S')}.{int(record.msecs):03d}",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_text:
            doc["exc"] = record.exc_text
        return json.dumps(doc, ensure_ascii=False)


def setup_logging(level: str = "info", fmt: str = "json") -> None:
    global _installed
    if not _installed:
        logging.setLogRecordFactory(_masking_factory(logging.getLogRecordFactory()))
        _installed = True
    handler = logging.StreamHandler()
    handler.setFormatter(
        JsonFormatter() if fmt == "json" else logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
