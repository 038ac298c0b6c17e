"""`paystream demo --chaos-providers`, small: the primary acquirer goes down and comes
back degraded; creates fail over, breakers trip, and no payment is authorized at two
providers by the rails' own records."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.demo.run import run_demo
from tests.integration.support import make_settings

pytestmark = pytest.mark.integration


def test_chaos_providers_demo_fails_over_and_charges_no_payment_twice(
    bootstrap: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = make_settings(tmp_path, "chaosprov")
    ok = run_demo(settings, payments=300, timeout_s=240, seed=11, chaos_providers=True)
    out = capsys.readouterr().out
    line = next((x for x in out.splitlines() if x.startswith("chaos: failovers=")), None)
    assert line is not None, out[-3000:]
    figures = {k: int(v) for k, v in (kv.split("=") for kv in line.removeprefix("chaos: ").split())}
    print(out)
    assert ok, out[-3000:]
    assert figures["failovers"] > 0 and figures["opens"] > 0
    assert figures["double_charges"] == 0 and figures["mismatched"] == 0
    assert figures["checked"] >= 250, "most payments reached an authorization decision and were checked"
    assert "acq_south" in out and "providers under chaos" in out
    # Every merchant the demo pays is registered before its traffic: none may be refused
    # as unknown (a registration handled after its merchant's creates would be).
    assert "merchant_unknown" not in out, out[-3000:]
