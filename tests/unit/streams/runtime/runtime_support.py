"""Helpers shared by the runtime's unit tests."""

from __future__ import annotations

import threading


class WatchExits:
    """The call watch's exits, recorded instead of made: `exited` is set at the first."""

    def __init__(self) -> None:
        self.why: list[str] = []
        self.exited = threading.Event()

    def __call__(self, reason: str) -> None:
        self.why.append(reason)
        self.exited.set()
