"""Development tooling: local services without Docker, the demo stack, the
ground-truth oracle. Not part of the installed product; run it from a
checkout with ``python -m devtools`` (the Makefile does)."""
