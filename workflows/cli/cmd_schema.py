"""snapflow schema: the JSON schema of a protection policy, for editors and CI checks."""

from __future__ import annotations

import json
import sys

NAME = "schema"
HELP = "print the JSON schema of a protection policy (for editor completion and validation)"
DESCRIPTION = """\
Print the JSON schema of one ProtectionPolicy document.

examples:
  snapflow schema > snapflow-policy.schema.json
  # VS Code / yaml-language-server, first line of a policy file:
  # yaml-language-server: $schema=./snapflow-policy.schema.json
"""


def configure(parser):
    parser.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")


def run(args) -> int:
    from workflows.policy import json_schema

    text = json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"
    if args.output:
        from pathlib import Path

        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)
    return 0
