"""The card vault edge: tokenization keys and (later) encrypted PAN storage."""
