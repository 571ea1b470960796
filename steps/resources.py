"""Where the Jinja2 templates live, for steps and the control plane alike.

``$SNAPFLOW_TEMPLATES`` when set (the step image sets it), else the ``templates/`` folder of the source
tree this package was loaded from. Every environment uses ``StrictUndefined``: a missing variable fails
loudly instead of rendering an empty string into a hook or a manifest.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from steps import runtime
from steps.errors import SnapflowError


def templates_dir() -> Path:
    env = os.environ.get(runtime.TEMPLATES)
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parent.parent / "templates")
    for c in candidates:
        if c.is_dir():
            return c
    raise SnapflowError(
        f"templates folder not found (looked in {', '.join(str(c) for c in candidates)}); set {runtime.TEMPLATES}"
    )


@functools.cache
def jinja_env(subdir: str = "", autoescape: bool = False):
    """A Jinja2 environment rooted at ``templates/<subdir>`` with StrictUndefined."""
    import jinja2

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir() / subdir)),
        undefined=jinja2.StrictUndefined,
        autoescape=autoescape,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
