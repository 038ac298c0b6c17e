"""The wire contract: Avro schemas, codecs and the value helpers both sides of a
topic must agree on (ids, money, cards). Imports nothing internal."""
