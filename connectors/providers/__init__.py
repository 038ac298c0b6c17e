"""Payment providers (acquirers, wallets, bank rails)."""
