"""What a stage handler sees and sends: plain values, no client objects."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, NoReturn

log = logging.getLogger("paystream.runtime")

# When the command entered the pipeline (its payment-commands record's timestamp, ms):
# every output carries it on as a header, so the stage that answers can measure the
# whole way (the `pipeline` latency). Operational time only: no stage decides by it.
ORIGIN_HEADER = "paystream-origin-ms"
EXIT_STALLED = 75  # EX_TEMPFAIL: restart me


@dataclass(frozen=True, slots=True)
class Message:
    """One consumed record."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    origin_ms: int  # the pipeline's entry time (ORIGIN_HEADER), else this record's timestamp
    # A record handed to its stage in the transaction that writes it (streams/runtime/handoff.py)
    # has no offset yet (-1); this id, unique to the worker's incarnation, names it instead.
    ref: str = ""


@dataclass(frozen=True, slots=True)
class Record:
    """One record to send inside the open transaction."""

    topic: str
    key: bytes | None
    value: bytes | None
    partition: int | None = None  # None: the source partition (same key, same partition count)


def origin_of(headers: Any, timestamp_ms: int) -> int:
    """The origin header among a record's headers (a list of pairs or a dict), or the
    record's own timestamp (the first hop)."""
    for key, value in headers.items() if isinstance(headers, dict) else headers or ():
        if key == ORIGIN_HEADER and value:
            try:
                return int(value)
            except ValueError:
                break  # not ours to trust: start the clock here
    return timestamp_ms


def exit_for_restart(why: str) -> NoReturn:
    """Crash-only: log why, flush the logs and exit with EXIT_STALLED at once (a graceful
    stop would wait on what is stuck). Kafka aborts the open transaction and the
    supervisor restarts the worker, which resumes from the committed offsets."""
    log.critical("%s; exiting with %d for a restart", why, EXIT_STALLED)
    logging.shutdown()
    os._exit(EXIT_STALLED)


def dlq_mark_key(stage: str, message: Message) -> bytes:
    """The dead-letter mark's key: one per stage, source topic and partition (bounded;
    two stages reading one topic keep apart)."""
    return f"{stage}:{message.topic}/{message.partition}".encode()


def dead_lettered_before(mark: bytes | None, offset: int) -> bool:
    """A mark is the last offset a stage dead-lettered from one source partition,
    written in the dead letter's own transaction, which also carries the source
    offset; a message at or below the mark was handled in a committed transaction
    (a partition is read in order), so its letter is there already. The runtime
    commits offsets with their effects, so this is a second line of defence: one
    dead letter per bad message whatever redelivers it."""
    return mark is not None and offset <= int(mark)
