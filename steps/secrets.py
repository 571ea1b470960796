"""The repository password, from the environment only (never from arguments, never printed).

``SNAPFLOW_PASSWORD`` or ``SNAPFLOW_PASSWORD_FILE`` (a file, the way a Kubernetes Secret is mounted; one
trailing newline is ignored). ``key add`` / ``key passwd`` read the new password from
``SNAPFLOW_NEW_PASSWORD`` or ``SNAPFLOW_NEW_PASSWORD_FILE``. Called by the data steps.
"""

from __future__ import annotations

import os

from steps import runtime
from steps.errors import UsageError

PASSWORD_ENV = runtime.PASSWORD
NEW_PASSWORD_ENV = runtime.NEW_PASSWORD


def _read(env_name: str, what: str) -> str:
    env = os.environ
    file_var = env_name + runtime.FILE_SUFFIX
    path = env.get(file_var)
    if path:
        try:
            with open(path, encoding="utf-8") as f:
                value = f.read()
        except OSError as err:
            raise UsageError(f"{file_var}: cannot read the {what} file {path!r} ({err.strerror})") from None
        if value.endswith("\n"):
            value = value[:-1]
            if value.endswith("\r"):
                value = value[:-1]
        if not value:
            raise UsageError(f"{file_var}: the {what} file {path!r} is empty")
        return value
    value = env.get(env_name)
    if value:
        return value
    raise UsageError(f"{env_name} or {file_var}: expected the {what}, got nothing")


def repository_password() -> str:
    return _read(PASSWORD_ENV, "repository password")


def new_password() -> str:
    return _read(NEW_PASSWORD_ENV, "new repository password")
