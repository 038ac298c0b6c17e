"""state_json writes what json.dumps(asdict(...)) wrote, without its copies."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from hypothesis import given
from hypothesis import strategies as st

from schemas.state import state_json


@dataclass(frozen=True)
class Leaf:
    name: str
    n: int


@dataclass(frozen=True)
class Node:
    label: str | None
    leaves: tuple[Leaf, ...] = ()
    tags: tuple[str, ...] = ()
    meta: dict[str, int] = field(default_factory=dict)


leaves = st.builds(Leaf, st.text(max_size=5), st.integers())
nodes = st.builds(Node, st.none() | st.text(max_size=5), st.tuples(leaves, leaves) | st.just(()),
                  st.lists(st.text(max_size=3), max_size=3).map(tuple), st.dictionaries(st.text(max_size=3), st.integers()))


@given(nodes)
def test_the_same_bytes_as_asdict(node: Node) -> None:
    assert state_json(node) == json.dumps(asdict(node), sort_keys=True, separators=(",", ":")).encode()


def test_real_states_round_trip() -> None:
    from connectors.providers.router import RoutingState

    state = RoutingState()
    assert RoutingState.from_json(state.to_json()) == state
