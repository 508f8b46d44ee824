"""The bottom layer: verdicts, errors and the typed results every other layer may use (imports nothing above)."""
