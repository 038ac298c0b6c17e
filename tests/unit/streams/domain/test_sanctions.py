"""Sanctions matching (streams/domain/sanctions.py): the shipped list parses, names match
themselves under any reordering, case and accents, unrelated names stay under the
threshold, and the list folds its topic's updates."""

from __future__ import annotations

import random
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.domain.sanctions import (
    Entry,
    SanctionsError,
    SanctionsList,
    list_updates,
    load_list,
    normalise,
    parse_list,
    similarity,
)

SHIPPED = load_list()
NAMES = [n for e in SHIPPED.entries() for n in (e.name, *e.aliases)]


def test_the_shipped_list_is_usable() -> None:
    assert len(SHIPPED) == 10 and SHIPPED.version
    assert all(e.programs and e.kind in ("individual", "entity", "vessel") for e in SHIPPED.entries())


def _variant(name: str, rng: random.Random) -> str:
    """The same name as a payer might type it: words shuffled, case changed, accents
    dropped or kept, commas and extra spaces."""
    words = name.replace(",", " ").split()
    rng.shuffle(words)
    out = []
    for w in words:
        if rng.random() < 0.5:
            w = "".join(c for c in unicodedata.normalize("NFKD", w) if not unicodedata.combining(c))
        w = rng.choice([w.upper(), w.lower(), w.title(), w])
        out.append(w)
    return rng.choice([" ", "  ", ", "]).join(out)


@given(name=st.sampled_from(NAMES), seed=st.integers(0, 2**32 - 1))
def test_a_listed_name_matches_itself_under_any_order_case_and_accents(name: str, seed: int) -> None:
    variant = _variant(name, random.Random(seed))
    assert normalise(variant) == normalise(name)
    hit = SHIPPED.screen(variant)
    assert hit is not None and hit.score == 100
    assert name in (hit.entry_name, *SHIPPED.get(hit.uid).aliases)


@given(data=st.data(), entry=st.sampled_from(SHIPPED.entries()))
def test_a_name_sharing_no_letter_with_an_entry_is_a_clear_miss_of_it(data: st.DataObject, entry: Entry) -> None:
    used = set("".join(normalise(n) for n in (entry.name, *entry.aliases)))
    unused = sorted(set("abcdefghijklmnopqrstuvwxyz") - used)
    words = data.draw(
        st.lists(st.text(alphabet=st.sampled_from(unused), min_size=2, max_size=12), min_size=1, max_size=4)
    )
    assert SanctionsList([entry]).screen(" ".join(words)) is None


@settings(max_examples=50)
@given(name=st.sampled_from(NAMES), threshold=st.integers(0, 100))
def test_the_score_is_symmetric_and_the_threshold_is_a_floor(name: str, threshold: int) -> None:
    other = NAMES[(NAMES.index(name) + 1) % len(NAMES)]
    assert similarity(name, other) == similarity(other, name)
    hit = SHIPPED.screen(other, threshold=threshold)
    assert hit is not None and hit.score >= threshold


@pytest.mark.parametrize(
    "payer",
    [
        "Ivan Petrovitch Drakonov",
        "drakonov ivan petrovich",
        "Jose Ramon Quinonero Bastidas",
        "Nordhavn Maritime Holding",
        "Stephan Vukasin",
        "KORVAT, sigmund",
        "Crimson Latice",
    ],
)
def test_transliterations_and_typos_hit(payer: str) -> None:
    assert SHIPPED.screen(payer) is not None


@pytest.mark.parametrize(
    "payer",
    [
        "Maria Garcia",
        "John Smith",
        "Li Wei",
        "Ivan Petrov",
        "Oskar Handel",
        "Jose Rodriguez",
        "Silent Night Bakery",
        "Nordic Maritime Services",
        "Crimson Tide Logistics",
    ],
)
def test_common_and_near_but_different_names_miss(payer: str) -> None:
    assert SHIPPED.screen(payer) is None


def test_a_hit_shows_the_entry_the_name_and_the_score() -> None:
    hit = SHIPPED.screen("Iwan Drakonow")
    assert hit is not None and (hit.uid, hit.matched_name, hit.score) == ("PS-0001", "Iwan Drakonow", 100)
    assert hit.entry_name == "Drakonov, Ivan Petrovich" and hit.programs == ("FICT-CYBER",)
    assert hit.reason() == "sanctions_hit:PS-0001:100"


def test_a_cleared_entry_is_not_a_hit_for_that_party() -> None:
    assert SHIPPED.screen("Ivan Drakonov", cleared=["PS-0001"]) is None
    assert SHIPPED.screen("Ivan Drakonov", cleared=["PS-0002"]) is not None


def test_an_empty_or_noise_only_name_is_not_screened() -> None:
    assert SHIPPED.screen("") is None and SHIPPED.screen("  Mr. ,, Ltd ") is None


def test_updates_list_delist_and_change_entries() -> None:
    sl = SanctionsList(SHIPPED.entries())
    new = Entry.make("PS-0100", "individual", "Quentin Marlowe Zebulon", programs=["FICT-FIN"])
    assert sl.screen("Zebulon Quentin Marlowe") is None
    sl.apply(new.uid, new)
    assert sl.screen("Zebulon Quentin Marlowe").uid == "PS-0100"
    sl.apply("PS-0001", None)
    assert sl.screen("Ivan Drakonov") is None and len(sl) == 10
    with pytest.raises(SanctionsError):
        sl.apply("PS-0002", new)  # the key must be the uid


def test_list_updates_publish_changes_and_tombstones() -> None:
    current = {e.uid: e for e in SHIPPED.entries()}
    target = SanctionsList([e for e in SHIPPED.entries() if e.uid != "PS-0003"], "v2")
    changed = Entry.make("PS-0001", "individual", "Drakonov, Ivan Petrovich", ["Ivan Drakonov"], ["FICT-CYBER"], "XA")
    target.apply("PS-0001", changed)
    assert list_updates(current, target) == [("PS-0001", changed), ("PS-0003", None)]
    assert list_updates({e.uid: e for e in target.entries()}, target) == []


@pytest.mark.parametrize(
    "record, why",
    [
        ({"uid": "bad uid", "kind": "entity", "name": "X Co", "programs": ["P"]}, "uid"),
        ({"uid": "A-1", "kind": "ship", "name": "X", "programs": ["P"]}, "kind"),
        ({"uid": "A-1", "kind": "entity", "name": "!!", "programs": ["P"]}, "letter"),
        ({"uid": "A-1", "kind": "entity", "name": "X", "programs": []}, "program"),
        ({"uid": "A-1", "kind": "entity", "name": "X", "programs": ["P"], "country": "xx"}, "country"),
        ({"kind": "entity"}, "not a sanctions entry"),
    ],
)
def test_bad_entries_are_refused_with_a_reason(record: dict, why: str) -> None:
    with pytest.raises(SanctionsError, match=why):
        Entry.from_record(record)


def test_bad_list_files_are_refused() -> None:
    with pytest.raises(SanctionsError, match="format"):
        parse_list('format = 2\nversion = "x"\n')
    with pytest.raises(SanctionsError, match="unique"):
        parse_list(
            'format = 1\nversion = "x"\n' + '[[entry]]\nuid="A"\nkind="entity"\nname="A B"\nprograms=["P"]\n' * 2
        )
    with pytest.raises(SanctionsError, match="TOML"):
        parse_list("format = ")
