"""One module per pipeline stage: a batch of decoded commands and the partition's state in,
state writes and records out."""
