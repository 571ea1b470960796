"""One module per step (see :mod:`steps.cli` for the contract each module follows)."""
