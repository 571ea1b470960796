"""snapflow backups: the step of the same name (``python -m steps backups``), from the control plane."""

from __future__ import annotations

from steps.api import backups_command

DESCRIPTION = backups_command.DESCRIPTION
HELP = backups_command.HELP
NAME = backups_command.NAME
configure = backups_command.configure
run = backups_command.run

__all__ = ["DESCRIPTION", "HELP", "NAME", "configure", "run"]
