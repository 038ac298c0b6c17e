"""The card vault edge: keys, card intake, tokens, sealed cards on the card-vault topic, the PAN scanner."""
