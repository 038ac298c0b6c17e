"""Merchant webhooks: endpoint registry, signed payloads, delivery schedule, HTTP sender."""
