"""The peers' hop on quixstreams: read a record, add one to a RocksDB counter under its
key, write the record on, exactly-once (quixstreams 3.28).
Usage: python quix_hop.py BOOTSTRAP SOURCE SINK APP_ID DATA_DIR PARTITIONS"""

import sys

from quixstreams import Application

bootstrap, source_name, sink_name, app_id, data_dir, _partitions = sys.argv[1:7]
app = Application(
    broker_address=bootstrap,
    consumer_group=app_id,
    processing_guarantee="exactly-once",
    auto_offset_reset="earliest",
    state_dir=data_dir,
    commit_interval=0.05,
    loglevel="WARNING",
)
source = app.topic(source_name, key_deserializer="bytes", value_deserializer="bytes")
sink = app.topic(sink_name, key_serializer="bytes", value_serializer="bytes")


def count(value, state):
    state.set("n", state.get("n", 0) + 1)


sdf = app.dataframe(source)
sdf = sdf.update(count, stateful=True)
sdf.to_topic(sink)
app.run()
