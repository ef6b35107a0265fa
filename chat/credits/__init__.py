"""Credits (issue 18): prices, balances, holds and the ledger. docs/credits.md."""
