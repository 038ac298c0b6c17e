"""Sanctions screening: a list of sanctioned parties (SDN-style, with aliases) and the
fuzzy match of a name against it. Pure: no Kafka, no clock, no logging (the names
screened are personal data).

The list ships as data (connectors/sanctions/list.toml, its format documented there
and in docs/compliance.md); updates travel on the compacted `sanctions-list` topic,
keyed by entry uid (a tombstone delists), and every reader applies them over the
shipped list (streams/worker/feeds.py), so an empty topic never means "screen
against nothing".

Matching. Both sides are normalised the same way (`normalise`): Unicode compatibility
decomposition with the diacritics dropped, a few letters NFKD leaves alone folded
(ø, ł, đ, æ, ...), case folded, punctuation to spaces, honorifics and legal-form
words dropped, and the words sorted, so case, accents, punctuation and word order do
not count. The score is rapidfuzz's normalised Indel similarity (`fuzz.ratio`, 0..100)
of the two normalised strings, against the entry's name and each alias; the best one
is the entry's score. A score >= THRESHOLD is a hit. Whole names are compared: a
short form of a listed name ("Ivan Drakonov" for "Drakonov, Ivan Petrovich") is a
hit only as an alias on the list, as real lists carry them.
"""

from __future__ import annotations

import re
import tomllib
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rapidfuzz import fuzz, process

SHIPPED_LIST = Path(__file__).resolve().parents[2] / "connectors" / "sanctions" / "list.toml"
LIST_FORMAT = 1
# 88 of 100: one or two letters off in a name of two or three words (a transliteration,
# a typo) still hits; two different common names (Maria Garcia, Mario Garza) do not.
# docs/compliance.md has the measured cases; tests/unit/streams/domain/test_sanctions.py keeps them.
THRESHOLD = 88
KINDS = ("individual", "entity", "vessel")
UID_PATTERN = re.compile(r"[A-Za-z0-9-]{1,32}")
MAX_NAME_LEN = 200  # a screened or listed name; longer is refused, not truncated
MAX_ALIASES = 50
MAX_ENTRIES = 100_000

# Letters NFKD does not decompose into a base letter and a mark.
_FOLD = str.maketrans(
    {"ø": "o", "ł": "l", "đ": "d", "ħ": "h", "ı": "i", "ŧ": "t", "þ": "th", "ð": "d", "æ": "ae", "œ": "oe", "ß": "ss"}
)
# Words that say what kind of name it is, not whose: dropped on both sides.
_NOISE = frozenset(
    {
        "mr",
        "mrs",
        "ms",
        "miss",
        "dr",
        "sir",
        "madam",
        "the",
        "ltd",
        "limited",
        "llc",
        "inc",
        "corp",
        "co",
        "plc",
        "gmbh",
        "sa",
        "ag",
        "bv",
        "fze",
    }
)
_WORD = re.compile(r"[^\W_]+")


class SanctionsError(ValueError):
    """A list entry or a list that cannot be used; the message says which field."""


def normalise(name: str) -> str:
    """The comparable form of a name: no case, accents, punctuation, noise words or
    word order ("Quiñonero Bastidas, José" -> "bastidas jose quinonero")."""
    decomposed = unicodedata.normalize("NFKD", name.casefold())
    plain = "".join(c for c in decomposed if not unicodedata.combining(c)).translate(_FOLD)
    return " ".join(sorted(w for w in _WORD.findall(plain) if w not in _NOISE))


def similarity(a: str, b: str) -> float:
    """0..100: how alike two names are, as screening scores them."""
    return fuzz.ratio(normalise(a), normalise(b))


@dataclass(frozen=True)
class Entry:
    """One listed party (schemas/avro/SanctionsEntry.avsc)."""

    uid: str
    kind: str
    name: str
    aliases: tuple[str, ...] = ()
    programs: tuple[str, ...] = ()
    country: str = ""

    @classmethod
    def make(
        cls,
        uid: str,
        kind: str,
        name: str,
        aliases: Iterable[str] = (),
        programs: Iterable[str] = (),
        country: str = "",
    ) -> Entry:
        aliases, programs = tuple(aliases), tuple(programs)
        if not isinstance(uid, str) or not UID_PATTERN.fullmatch(uid):
            raise SanctionsError(f"uid must match {UID_PATTERN.pattern}")
        if kind not in KINDS:
            raise SanctionsError(f"{uid}: kind must be one of {', '.join(KINDS)}")
        for n in (name, *aliases):
            if not isinstance(n, str) or not normalise(n) or len(n) > MAX_NAME_LEN:
                raise SanctionsError(f"{uid}: every name needs a letter or digit and at most {MAX_NAME_LEN} chars")
        if len(aliases) > MAX_ALIASES:
            raise SanctionsError(f"{uid}: at most {MAX_ALIASES} aliases")
        if not programs or not all(isinstance(p, str) and 0 < len(p) <= 32 for p in programs):
            raise SanctionsError(f"{uid}: at least one program, each 1..32 chars")
        if country and not re.fullmatch(r"[A-Z]{2}", country):
            raise SanctionsError(f"{uid}: country must be ISO 3166-1 alpha-2 or empty")
        return cls(uid, kind, name, aliases, programs, country)

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Entry:
        try:
            return cls.make(
                record["uid"],
                record["kind"],
                record["name"],
                record.get("aliases") or (),
                record.get("programs") or (),
                record.get("country") or "",
            )
        except (KeyError, TypeError) as e:
            raise SanctionsError(f"not a sanctions entry: {type(e).__name__} {e}"[:200]) from None

    def to_record(self, list_version: str) -> dict[str, Any]:
        return {
            "uid": self.uid,
            "kind": self.kind,
            "name": self.name,
            "aliases": list(self.aliases),
            "programs": list(self.programs),
            "country": self.country,
            "list_version": list_version,
        }


@dataclass(frozen=True)
class Match:
    """A hit: which entry, under which of its names, how alike (0..100, integer)."""

    uid: str
    kind: str
    entry_name: str
    matched_name: str  # the entry's name or the alias that scored best
    score: int
    programs: tuple[str, ...]

    def reason(self) -> str:
        """The short form a command's reasons and a payout's status carry."""
        return f"sanctions_hit:{self.uid}:{self.score}"


class SanctionsList:
    """The list as a reader holds it: entries by uid, and every name normalised once."""

    def __init__(self, entries: Iterable[Entry] = (), version: str = "") -> None:
        self.version = version
        self._entries: dict[str, Entry] = {}
        self._choices: list[str] | None = None  # normalised names, rebuilt after a change
        self._owners: list[tuple[str, str]] = []  # (uid, the name as listed) per choice
        for entry in entries:
            self.apply(entry.uid, entry)

    def __len__(self) -> int:
        return len(self._entries)

    def entries(self) -> list[Entry]:
        return sorted(self._entries.values(), key=lambda e: e.uid)

    def get(self, uid: str) -> Entry | None:
        return self._entries.get(uid)

    def apply(self, uid: str, entry: Entry | None) -> None:
        """One update of the topic: an entry listed or changed, or (None) delisted."""
        if entry is None:
            self._entries.pop(uid, None)
        else:
            if entry.uid != uid:
                raise SanctionsError(f"the key {uid[:32]!r} is not the entry's uid {entry.uid}")
            if uid not in self._entries and len(self._entries) >= MAX_ENTRIES:
                raise SanctionsError(f"the list holds at most {MAX_ENTRIES} entries")
            self._entries[uid] = entry
        self._choices = None

    def _index(self) -> list[str]:
        if self._choices is None:
            choices, owners = [], []
            for entry in self._entries.values():
                for name in (entry.name, *entry.aliases):
                    choices.append(normalise(name))
                    owners.append((entry.uid, name))
            self._choices, self._owners = choices, owners
        return self._choices

    def screen(self, name: str, *, threshold: int = THRESHOLD, cleared: Iterable[str] = ()) -> Match | None:
        """The best hit for `name` at or above `threshold`, or None (a clear miss).
        `cleared`: entry uids a reviewer ruled out for this party (false positives)."""
        query = normalise(name)
        if not query:
            return None
        skip = set(cleared)
        best: Match | None = None
        # Every choice at or above the threshold (extract is C++; the list is small), best first.
        for _, score, i in process.extract(
            query, self._index(), scorer=fuzz.ratio, processor=None, score_cutoff=threshold, limit=None
        ):
            uid, listed = self._owners[i]
            if uid in skip or int(score) < threshold:
                continue
            entry = self._entries[uid]
            hit = Match(uid, entry.kind, entry.name, listed, int(score), entry.programs)
            if best is None or (hit.score, hit.uid) > (best.score, best.uid):
                best = hit
        return best


def parse_list(text: str) -> SanctionsList:
    """A list file's content (format 1, see connectors/sanctions/list.toml)."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise SanctionsError(f"not TOML: {e}") from None
    if raw.get("format") != LIST_FORMAT:
        raise SanctionsError(f"format must be {LIST_FORMAT}")
    version = raw.get("version")
    if not isinstance(version, str) or not version:
        raise SanctionsError("version must be a non-empty string")
    entries = [Entry.from_record(e) for e in raw.get("entry", [])]
    uids = [e.uid for e in entries]
    if len(set(uids)) != len(uids):
        raise SanctionsError("uids must be unique")
    return SanctionsList(entries, version)


def load_list(path: Path = SHIPPED_LIST) -> SanctionsList:
    return parse_list(path.read_text(encoding="utf-8"))


def list_updates(current: Mapping[str, Entry], target: SanctionsList) -> list[tuple[str, Entry | None]]:
    """What to publish to move the topic from `current` (uid -> entry, as folded) to
    `target`: each new or changed entry, and a tombstone for each uid no longer listed."""
    wanted = {e.uid: e for e in target.entries()}
    out: list[tuple[str, Entry | None]] = [(uid, e) for uid, e in wanted.items() if current.get(uid) != e]
    return out + [(uid, None) for uid in sorted(current) if uid not in wanted]
