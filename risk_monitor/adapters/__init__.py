"""One module per real system; each maps wire payloads to domain types and errors to ours."""
