"""Unit tests: one room of simulator/ each, on small handmade or tiny generated inputs (all in the fast tier)."""
