"""The batch exactly-once runtime on librdkafka (confluent-kafka): one consumer and one
transactional producer per worker process (KIP-447), tasks per partition, RocksDB
tables with compacted changelogs, commit every few tens of milliseconds.

The commit order, in one place (streams/runtime/engine.py carries it out):
  1. `consume` a batch (up to `batch_max` records or `poll_ms`) from every source
     partition this worker owns; group it by (topic, partition), offsets in order;
  2. each group goes to its stage's handler with the partition's task: the handler
     reads tables through the task (pending writes first, then RocksDB), writes to
     the task's pending writes and sends output records into the open transaction;
     a record sent to a partition of a later stage's source that this worker owns is
     handed to that stage after the batch's read records, in the same transaction,
     and marked so that it is skipped when read (runtime/handoff.py);
  3. at the commit interval (or `commit_records_max`): the last pending value of
     each written key goes to its table's changelog (same partition number; in a
     changelog several tables share, the key prefixed by the table: runtime/changelog.py),
     the pending writes are sealed, and a committer thread sends the consumed offsets
     with the consumer's group metadata (`send_offsets_to_transaction`) and commits:
     outputs, state and progress land together or not at all;
  4. meanwhile the loop handles the next batches into the next transaction: its reads
     see its own pending writes, then the sealed ones, then RocksDB; its sends wait in
     memory, since it can begin at the producer only once the one in flight is
     decided (one transaction in flight at most; the next commit waits for it);
  5. committed: the sealed writes go to RocksDB in one WriteBatch per store, and the
     next transaction begins and sends what waited. Aborted: the next transaction,
     which read the sealed writes, goes too; both are redone from the first one's
     offsets. Local RocksDB therefore never holds an uncommitted write; after a crash
     it is discarded anyway and restored from the changelogs (read_committed), the
     committed changelog being the truth.
A rebalance decides the transaction in flight and commits the open one before
partitions are given up (Kafka Streams' commit at revocation); an assigned partition's tables are restored to the
changelog's end before its first record is handled, and its stages that read a table
another stage feeds wait until that feeding partition is read to its end
(streams/runtime/catchup.py). A failed transactional call is
retried (retriable), aborted and its input redone from the transaction's first
offsets in the same process (abortable), or exits the process for a restart (fatal,
unflagged, or out of retries): streams/runtime/txn.py decides, by librdkafka's contract.
"""
