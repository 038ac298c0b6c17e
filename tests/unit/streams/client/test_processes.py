"""The supervisor's restart limit: a crash loop stops it, restarts spread over a long run do not."""

from pathlib import Path

import pytest

from streams.client.processes import MAX_RESTARTS, RESTART_WINDOW_S, WorkerProcess
from streams.settings import Settings


class CountingWorker(WorkerProcess):
    """Starts and kills nothing: only the restart bookkeeping is under test."""

    def start(self) -> WorkerProcess:
        self.starts = getattr(self, "starts", 0) + 1
        return self

    def kill(self) -> None:
        pass


def worker(tmp_path: Path) -> CountingWorker:
    return CountingWorker(Settings(data_dir=tmp_path), tmp_path / "w.log")


def test_a_crash_loop_gives_up(tmp_path: Path) -> None:
    w = worker(tmp_path)
    for i in range(MAX_RESTARTS):
        w.restart(now_s=float(i))
    with pytest.raises(RuntimeError, match=f"after {MAX_RESTARTS} restarts in 3s"):
        w.restart(now_s=3.0)
    assert w.restarts == MAX_RESTARTS and w.starts == MAX_RESTARTS, "the refused restart started nothing"


def test_restarts_spread_over_a_long_run_go_on(tmp_path: Path) -> None:
    w = worker(tmp_path)
    at_s = 0.0
    for _ in range(4 * MAX_RESTARTS):
        w.restart(now_s=at_s)
        at_s += RESTART_WINDOW_S / (MAX_RESTARTS - 1)  # MAX_RESTARTS never fit in one window
    assert w.restarts == 4 * MAX_RESTARTS
