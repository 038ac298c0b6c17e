"""`metrics.serve`: the worker and the sink expose /metrics on PAYSTREAM_METRICS_PORT."""

from __future__ import annotations

import socket
import urllib.request

from streams import metrics


def test_serve_exposes_the_registry_and_none_serves_nothing() -> None:
    metrics.serve(None)  # nothing to assert but that it returns: no port, no server
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    metrics.serve(port)
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert "# TYPE paystream_ledger_imbalance_minor gauge" in text
