"""Against the shared embedded broker (`paystream kafka up` before pytest).

Never stops the broker: other integration tests use it.
"""

import time
import uuid
from pathlib import Path

import pytest

from connectors.kafka.admin import TopicError, TopicSpec, align_topic_configs, ensure_topics
from connectors.kafka.launcher import BrokerConfig, status, up
from tests.integration.support import scratch_topics

pytestmark = pytest.mark.integration

CFG = BrokerConfig(home=Path("var/kafka"))


def test_status_reports_running_and_answering() -> None:
    st = status(CFG)
    assert st.running and st.answering, f"start the broker first (paystream kafka up); log: {st.log_file}"
    assert st.pid is not None
    assert st.bootstrap == "localhost:19092"


def test_up_is_idempotent_and_quick() -> None:
    before = status(CFG)
    started = time.monotonic()
    st = up(CFG)
    assert time.monotonic() - started < 10
    assert st.already_running and st.answering
    assert st.pid == before.pid


def test_ensure_topics_creates_once_and_refuses_another_partition_count() -> None:
    name = f"it-launcher-{uuid.uuid4().hex[:12]}"
    scratch_topics(CFG.bootstrap, [name])
    spec = TopicSpec(name, partitions=3, retention_ms=60_000)

    assert ensure_topics(CFG.bootstrap, [spec]) == [name]
    assert ensure_topics(CFG.bootstrap, [spec]) == []
    with pytest.raises(TopicError, match=f"{name} has 3 partitions, spec wants 4"):
        ensure_topics(CFG.bootstrap, [TopicSpec(name, partitions=4)])
    with pytest.raises(TopicError, match=f"{name} has 3 partitions, spec wants 2"):
        ensure_topics(CFG.bootstrap, [TopicSpec(name, partitions=2)])  # more than the settings say: as wrong


def test_align_sets_an_existing_topics_config_to_its_spec() -> None:
    name = f"it-align-{uuid.uuid4().hex[:12]}"
    scratch_topics(CFG.bootstrap, [name])
    ensure_topics(CFG.bootstrap, [TopicSpec(name, partitions=1, compacted=True)])
    spec = TopicSpec(name, partitions=1, compacted=True, extra_config={"segment.ms": "60000"})

    assert align_topic_configs(CFG.bootstrap, [spec]) == [f"{name}: segment.ms 604800000 -> 60000"]
    assert align_topic_configs(CFG.bootstrap, [spec]) == [], "aligned once, then nothing differs"
    with pytest.raises(TopicError, match="cleanup.policy is compact, spec wants delete"):
        align_topic_configs(CFG.bootstrap, [TopicSpec(name, partitions=1)])
