"""snapflow backups: the step of the same name (``python -m steps backups``), from the control plane."""

from __future__ import annotations

from steps.commands.backups import DESCRIPTION, HELP, NAME, configure, run

__all__ = ["DESCRIPTION", "HELP", "NAME", "configure", "run"]
