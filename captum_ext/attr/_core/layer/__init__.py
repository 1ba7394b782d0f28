"""Layer attribution methods."""
