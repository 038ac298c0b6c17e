"""Logs: card numbers are masked before any handler sees a record."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from streams import logs

PAN = "4242424242424242"


@contextmanager
def installed(fmt: str = "json", level: str = "info") -> Iterator[tuple[io.StringIO, io.StringIO]]:
    """setup_logging for the duration of a test, writing to memory: yields (what the
    handler setup_logging installed wrote, what an extra plain handler wrote).

    setup_logging replaces the root handlers and the record factory process-wide;
    both are restored on exit, inside the test, so pytest's own handlers survive.
    """
    root = logging.getLogger()
    saved = root.handlers[:], root.level, logging.getLogRecordFactory(), logs._installed
    logs._installed = False
    try:
        logs.setup_logging(level, fmt)
        installed_out, plain_out = io.StringIO(), io.StringIO()
        root.handlers[0].setStream(installed_out)
        plain = logging.StreamHandler(plain_out)
        plain.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
        root.addHandler(plain)
        yield installed_out, plain_out
    finally:
        root.handlers[:], level, factory, logs._installed = saved
        root.setLevel(level)
        logging.setLogRecordFactory(factory)


def test_pan_in_a_message_is_masked() -> None:
    with installed() as (json_out, plain_out):
        logging.getLogger("paystream.test").info("charging card %s for %d", PAN, 1000)
        logging.getLogger("aiokafka.any").warning(f"raw value b'...{PAN}...'")  # a logger that is not ours

    for out in (json_out.getvalue(), plain_out.getvalue()):
        assert PAN not in out
        assert "charging card [PAN] for 1000" in out
        assert "[PAN]" in out.splitlines()[1]


def test_json_format_is_one_object_per_line() -> None:
    with installed() as (json_out, _):
        logging.getLogger("paystream.worker").warning("card %s", PAN)

    doc = json.loads(json_out.getvalue())
    assert (doc["level"], doc["logger"], doc["msg"]) == ("warning", "paystream.worker", "card [PAN]")


def test_pan_in_an_exception_traceback_is_masked() -> None:
    with installed() as (json_out, plain_out):
        try:
            raise ValueError(f"provider refused card {PAN}")
        except ValueError:
            logging.getLogger("paystream.worker").exception("payments stage failed on command %s", "cmd_1")

    doc = json.loads(json_out.getvalue())
    assert doc["msg"] == "payments stage failed on command cmd_1"
    assert "ValueError: provider refused card [PAN]" in doc["exc"]
    assert "Traceback" in plain_out.getvalue()
    assert "ValueError: provider refused card [PAN]" in plain_out.getvalue()
    assert PAN not in json_out.getvalue() + plain_out.getvalue()


def test_text_format_masks_too() -> None:
    with installed("text") as (text_out, _):
        logging.getLogger("paystream.cli").info("card 4242 4242 4242 4242")
    assert text_out.getvalue().rstrip().endswith("INFO paystream.cli card [PAN]")


def test_messages_without_pans_are_untouched() -> None:
    with installed() as (_, plain_out):
        logging.getLogger("paystream.test").info("offset %d at %d, 100%% done", 1732540000000, 42)
    assert plain_out.getvalue() == "INFO offset 1732540000000 at 42, 100% done\n"


def test_level_is_applied() -> None:
    with installed(level="warning") as (_, plain_out):
        logging.getLogger("paystream.test").info("hidden")
        logging.getLogger("paystream.test").warning("shown")
    assert plain_out.getvalue() == "WARNING shown\n"


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_setup_logging_replaces_root_handlers(fmt: str) -> None:
    with installed(fmt):
        handlers = logging.getLogger().handlers
        assert len(handlers) == 2  # setup_logging's own, plus the test's plain one
        assert isinstance(handlers[0].formatter, logs.JsonFormatter) == (fmt == "json")


def test_a_bad_format_call_neither_raises_nor_leaks() -> None:
    # Unmasked, logging would raise here (our factory formats early) or print the raw args to stderr.
    with installed() as (json_out, plain_out):
        logging.getLogger("paystream.test").info("card %s and %s", PAN)
    doc = json.loads(json_out.getvalue())
    assert doc["msg"] == "card %s and %s (log args do not match the format: ('[PAN]',))"
    assert PAN not in json_out.getvalue() + plain_out.getvalue()


def test_stack_info_is_masked() -> None:
    with installed("text") as (text_out, _):
        # The stack shows the calling source line, PAN literal included.
        logging.getLogger("paystream.test").info("where", stack_info=True, extra={"card": "4242424242424242"})
    assert "Stack (most recent call last)" in text_out.getvalue()
    assert '"card": "[PAN]"' in text_out.getvalue() and PAN not in text_out.getvalue()
