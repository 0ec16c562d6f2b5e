"""Trading flow: realised P&L rebuilt from fills and the three-book reconciliation."""
