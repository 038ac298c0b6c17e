"""The simulated providers' own books on disk: one append-only JSONL file per rail.

A real provider is external: it remembers what it processed however often our
workers restart or hand partitions to each other. A `Rail` given a journal dir
appends every record it keeps to `<dir>/<rail>.jsonl` and loads the file when it
starts, so a redelivered command gets the recorded answer, not a second charge.

- One line per record, written with one `os.write` on an `O_APPEND` fd: concurrent
  processes on this machine never interleave lines. Written before the rail
  answers; not fsynced (the page cache survives a worker crash, the case this
  serves; docs/providers.md has the measurement).
- `locked()` holds an exclusive `flock` over a lookup-process-append, so two
  processes that miss the same key at once record it once.
- `read_new()` yields the complete lines past the last offset read (this process's
  own lines too: the rail skips what it holds). A line still being written (no
  newline yet) is left for the next read.
- A torn line (a crash mid-write) is glued to the line appended after it. Every line
  starts with `{"v":1,`, which cannot occur inside a JSON string (its quotes would be
  escaped), so the record is read from that marker's last occurrence and the torn
  bytes before it are skipped: counted in `torn`, logged, never a crash. A complete
  line that is not a record is counted in `bad` and skipped the same way.
"""

from __future__ import annotations

import fcntl
import logging
import os
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import orjson

log = logging.getLogger("paystream.providers")

VERSION = 1
MARKER = b'{"v":1,'
# A record is a few hundred bytes; a longer line is not one of ours.
MAX_LINE_BYTES = 65_536
READ_CHUNK_BYTES = 1_048_576
T = TypeVar("T")


class JournalError(OSError):
    """The journal file cannot be opened or written; the message names the path."""


class _Flock:
    """`flock` held over a `with` block: a plain context manager, since a rail takes it
    on every call it records (a generator-based one cost ~3 µs more per call)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __enter__(self) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def __exit__(self, *_: object) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)


class Journal:
    """One rail's append-only file. Not thread-safe (a worker holds one per rail)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as e:
            raise JournalError(f"{path}: cannot open the provider journal: {e.strerror}") from None
        self._close = weakref.finalize(self, os.close, self.fd)
        self.offset = 0  # bytes read so far, always just past a newline
        self.torn = 0  # torn writes skipped
        self.bad = 0  # complete lines that were not records

    def close(self) -> None:
        self._close()

    def append(self, obj: dict[str, Any]) -> None:
        """Write one record as one line, in one write."""
        line = orjson.dumps({"v": VERSION, **obj}) + b"\n"  # compact, "v" first: MARKER
        assert line.startswith(MARKER) and len(line) <= MAX_LINE_BYTES, obj
        try:
            written = os.write(self.fd, line)
        except OSError as e:
            raise JournalError(f"{self.path}: cannot append: {e.strerror}") from None
        if written != len(line):  # a full disk: the tail is torn, the next reader skips it
            raise JournalError(f"{self.path}: short write ({written} of {len(line)} bytes)")
        # Our line right after what we last read: no need to read it back.
        end = os.lseek(self.fd, 0, os.SEEK_CUR)
        if end - written == self.offset:
            self.offset = end

    def locked(self) -> _Flock:
        """Exclusive against every other process's `locked()` on this file."""
        return _Flock(self.fd)

    def read_new(self, decode: Callable[[dict[str, Any]], T]) -> Iterator[T]:
        """`decode` of each complete line appended since the last read, oldest first;
        a line `decode` refuses (ValueError, KeyError, TypeError, AssertionError) is
        counted in `bad`. Consume it to the end: the offset moves as lines are yielded."""
        pending = b""
        while True:
            chunk = os.pread(self.fd, READ_CHUNK_BYTES, self.offset + len(pending))
            if not chunk:
                return
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                self.offset += len(line) + 1
                record = self._parse(line, decode)
                if record is not None:
                    yield record

    def _parse(self, line: bytes, decode: Callable[[dict[str, Any]], T]) -> T | None:
        if not line:
            return None
        at = self.offset - len(line) - 1
        start = line.rfind(MARKER)
        if start > 0:
            self.torn += 1
            log.warning(
                "%s: skipped %d torn byte(s) at offset %d (a write cut short); %d so far",
                self.path,
                start,
                at,
                self.torn,
            )
            line = line[start:]
        try:
            if start < 0 or len(line) > MAX_LINE_BYTES:
                raise ValueError("not a record line")
            obj = orjson.loads(line)
            if not isinstance(obj, dict) or obj.pop("v", None) != VERSION:
                raise ValueError("not a version 1 record")
            return decode(obj)
        except (ValueError, KeyError, TypeError, AssertionError):  # UnicodeDecodeError is a ValueError
            self.bad += 1
            log.warning("%s: skipped a line that is not a record at offset %d; %d so far", self.path, at, self.bad)
            return None
