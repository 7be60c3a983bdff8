"""Scenarios: cohorts conditioned on what must happen to each patient, with importance weights and ground
truth (docs/scenarios.md). schema: the file format; plan: a file checked and compiled against a library;
run: the conditioned simulation and its truth tables; output: chunks, truth files and the manifest entry."""
