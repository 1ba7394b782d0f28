"""Private helpers shared by captum-ext methods and metrics (not public API)."""
