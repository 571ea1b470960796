"""Argument helpers shared by the commands (kept free of heavy imports so that ``--help`` stays fast)."""

from __future__ import annotations

import argparse


def switch_option() -> dict:
    """``add_argument`` keywords of an option that is on alone (``--dry-run``) and also takes ``true`` or
    ``false`` (``--dry-run false``: how a workflow parameter passes it)."""

    def parse(value: str) -> bool:
        if value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")

    return {"nargs": "?", "const": True, "default": False, "type": parse, "metavar": "true|false"}
