"""The peers' hop on Faust: read a record, add one to a RocksDB counter under its key,
write the record on, exactly-once (faust-streaming 0.15.3, aiokafka).
Usage: python faust_hop.py BOOTSTRAP SOURCE SINK APP_ID DATA_DIR PARTITIONS"""

import sys

import faust
from faust.worker import Worker

bootstrap, source_name, sink_name, app_id, data_dir, partitions = sys.argv[1:7]
app = faust.App(
    app_id,
    broker=f"kafka://{bootstrap}",
    store="rocksdb://",
    datadir=data_dir,
    processing_guarantee="exactly_once",
    topic_partitions=int(partitions),
    key_serializer="raw",
    value_serializer="raw",
    consumer_auto_offset_reset="earliest",
    web_enabled=False,
    broker_commit_interval=0.05,
)
source = app.topic(source_name, key_type=bytes, value_type=bytes)
sink = app.topic(sink_name, key_type=bytes, value_type=bytes)
counts = app.Table("counts", partitions=int(partitions), key_type=bytes, value_type=bytes)


@app.agent(source)
async def hop(stream):
    async for event in stream.events():
        counts[event.key] = str(int(counts.get(event.key) or b"0") + 1).encode()
        await sink.send(key=event.key, value=event.value)


Worker(app, loglevel="warning", quiet=True).execute_from_commandline()
