"""The API's OpenAPI document, as committed in docs/openapi.json.

Regenerate after changing a route or a model:
`PYTHONPATH=. python -m streams.api.openapi > docs/openapi.json`
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from streams.api.acs import Acs
from streams.api.app import create_app
from streams.api.auth import ApiKeys
from streams.api.bus import InMemoryBus

SPEC_PATH = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"


class _SpecOnly:
    """The ACS's signer in an app that only describes itself: it never signs."""

    key_id = "acs-signing-v1"

    def sign(self, message: bytes) -> bytes:
        raise RuntimeError("the spec's app signs nothing")


def spec_json() -> str:
    app = create_app(
        InMemoryBus(lambda _c: None),
        ApiKeys(Path("/nonexistent/api_keys.json")),
        sealer=None,
        instance="spec",
        acs=Acs(_SpecOnly()),
    )
    return json.dumps(app.openapi(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    sys.stdout.write(spec_json())
