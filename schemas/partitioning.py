"""Key -> partition, the way Kafka's Java client does it (murmur2, positive mask).

Every client that publishes to our keyed topics must use this partitioner
(confluent-kafka: `partitioner=murmur2_random`; aiokafka and Java: the default),
so that all commands of a payment land on one partition. Ingest checks it.
"""

from __future__ import annotations

_M = 0x5BD1E995
_SEED = 0x9747B28C
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    length = len(data)
    h = (_SEED ^ length) & _MASK
    n4 = length // 4
    for i in range(n4):
        k = int.from_bytes(data[i * 4 : i * 4 + 4], "little")
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = (h * _M) & _MASK
        h ^= k
    tail = length & 3
    if tail == 3:
        h ^= data[n4 * 4 + 2] << 16
    if tail >= 2:
        h ^= data[n4 * 4 + 1] << 8
    if tail >= 1:
        h ^= data[n4 * 4]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h


def partition_for(key: bytes, partitions: int) -> int:
    assert partitions > 0
    return (murmur2(key) & 0x7FFFFFFF) % partitions
