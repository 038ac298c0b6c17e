"""state_json writes the value json.dumps(asdict(...)) wrote (old state stays readable),
deterministically, and reads back through state_loads."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.state import state_json, state_loads

int64 = st.integers(-(2**63), 2**63 - 1)


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


leaves = st.builds(Leaf, st.text(max_size=5), int64)
nodes = st.builds(
    Node,
    st.none() | st.text(max_size=5),
    st.tuples(leaves, leaves) | st.just(()),
    st.lists(st.text(max_size=3), max_size=3).map(tuple),
    st.dictionaries(st.text(max_size=3), int64),
)


@given(nodes)
def test_the_same_value_as_asdict_both_ways(node: Node) -> None:
    old = json.dumps(asdict(node), sort_keys=True, separators=(",", ":")).encode()
    assert state_loads(state_json(node)) == json.loads(old) == state_loads(old)


@given(nodes)
def test_equal_states_give_equal_bytes(node: Node) -> None:
    reordered = Node(node.label, node.leaves, node.tags, dict(reversed(list(node.meta.items()))))
    assert state_json(reordered) == state_json(node)


def test_an_int_past_64_bits_is_refused() -> None:
    with pytest.raises(TypeError):
        state_json(Leaf("x", 2**64))


def test_real_states_round_trip() -> None:
    from connectors.providers.router import RoutingState

    state = RoutingState()
    assert RoutingState.from_json(state.to_json()) == state


# --- canonical_json: the hashed and signed bytes must not change under them ---

_text = st.text(st.characters(blacklist_categories=("Cs",)))  # Avro strings are valid UTF-8
_leaves = st.none() | st.booleans() | int64 | _text
_json = st.recursive(_leaves, lambda c: st.lists(c, max_size=4) | st.dictionaries(_text, c, max_size=4), max_leaves=20)


@given(st.dictionaries(_text, _json, max_size=6))
def test_canonical_json_is_what_json_dumps_wrote(value: dict) -> None:
    from schemas.state import canonical_json

    old = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    assert canonical_json(value) == old


@dataclass(frozen=True)
class Checked:
    n: int
    label: str = "x"

    def __post_init__(self) -> None:
        assert self.n >= 0, self.n


@given(st.integers(0, 10), st.text(max_size=3))
def test_evolved_is_replace_and_keeps_the_invariants(n: int, label: str) -> None:
    from dataclasses import replace

    from schemas.state import evolved

    base = Checked(1)
    assert evolved(base, n=n, label=label) == replace(base, n=n, label=label)
    assert state_json(evolved(base, label=label)) == state_json(replace(base, label=label))  # field order kept
    with pytest.raises(AssertionError):
        evolved(base, n=-1)
    with pytest.raises(TypeError, match="no field"):
        evolved(base, m=1)
    assert base == Checked(1)  # the original is left as it was


@given(st.integers(-3, 10), st.text(max_size=3))
def test_made_is_the_constructor_and_checks_unless_told(n: int, label: str) -> None:
    from schemas.state import made

    if n < 0:
        with pytest.raises(AssertionError):
            Checked(n, label)
        with pytest.raises(AssertionError):
            made(Checked, {"n": n, "label": label})
        assert made(Checked, {"n": n, "label": label}, check=False).n == n  # the caller's check, not made's
        return
    value = made(Checked, {"n": n, "label": label})
    assert value == Checked(n, label) and state_json(value) == state_json(Checked(n, label))
