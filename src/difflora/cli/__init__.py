"""The `difflora` command line."""
