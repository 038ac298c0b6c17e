"""Fraud ML: the feature spec shared online and offline, rules, blocklists, training,
scoring and replay. Imports `schemas` only (never `streams` or `connectors`)."""
