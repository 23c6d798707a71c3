"""Trial definitions (one module per trial, declared as data)."""
