"""The JSON API of the central portal, for scripts and sites (documented at /docs)."""
