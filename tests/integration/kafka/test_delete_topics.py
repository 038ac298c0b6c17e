"""A scratch run's topics deleted by name and by prefix on a real broker, and nothing else."""

from __future__ import annotations

import uuid

import pytest

from connectors.kafka.admin import TopicSpec, delete_topics, ensure_topics

pytestmark = pytest.mark.integration


def test_delete_topics_removes_the_named_and_prefixed_topics_only(bootstrap: str) -> None:
    run = f"scratch-{uuid.uuid4().hex[:8]}"
    keep, named = f"{run}x.keep", f"other-{run}.named"
    prefixed = [f"{run}.in", f"{run}.out", f"{run}-counts-changelog"]
    ensure_topics(bootstrap, [TopicSpec(t, 1, 1) for t in (keep, named, *prefixed)])

    deleted = delete_topics(bootstrap, [named, "never-created-" + run], prefixes=[f"{run}.", f"{run}-"])

    assert deleted == sorted([named, *prefixed])
    assert delete_topics(bootstrap, prefixes=[f"{run}."]) == []  # gone already: nothing to do
    assert delete_topics(bootstrap, [keep]) == [keep]  # the look-alike survived the prefixes
