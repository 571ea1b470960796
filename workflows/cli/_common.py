"""Helpers shared by the snapflow commands: printing policy problems one per line."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TypeVar

from steps.errors import EXIT_USAGE

T = TypeVar("T")


def policy_errors_as_lines(fn: Callable[[], T]) -> T | int:
    """Run ``fn``; a PolicyError prints each problem on its own line (stderr) and gives exit code 2."""
    from workflows.policy import PolicyError

    try:
        return fn()
    except PolicyError as err:
        for line in err.problems:
            print(line, file=sys.stderr)
        return EXIT_USAGE


def print_warnings(warnings: list[str]) -> None:
    for line in warnings:
        print(line, file=sys.stderr)
