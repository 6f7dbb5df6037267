"""Research code that reproduces the shipped weights; not part of the attnmesh wheel (run from the repository root)."""
