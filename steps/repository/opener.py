"""The one way to open an existing repository: its URL and endpoint, the password from the environment.

Every step, and the control plane on this machine, opens a repository with :func:`open_repository`;
it is the only caller of :meth:`Repository.open <steps.repository.repo.Repository.open>` outside
tests.
"""

from __future__ import annotations

from collections.abc import Callable

from steps.repository.repo import Repository


def open_repository(
    url: str,
    endpoint: str | None = None,
    *,
    as_of: str | None = None,
    password: str | None = None,
    warn: Callable[[str], None] | None = None,
) -> Repository:
    """The repository at ``url`` (``endpoint`` or ``$SNAPFLOW_S3_ENDPOINT`` for S3), opened with
    ``password`` or the one in the environment (:func:`steps.secrets.repository_password`, read
    first). ``as_of`` (ISO 8601) reads it as it was then, from the bucket's object versions; ``warn``
    is told when the bucket keeps none."""
    from steps.drivers.objectstore import open_store
    from steps.secrets import repository_password

    if password is None:
        password = repository_password()
    store = open_store(url, endpoint)
    if as_of:
        from steps.repository.object_lock import AsOfStore, parse_as_of

        when = parse_as_of(as_of)
        if not store.versioning_enabled() and warn is not None:
            warn(f"--as-of: {store.url} keeps no old versions; only objects written after {as_of} are hidden")
        store = AsOfStore(store, when)
    return Repository.open(store, password)


def open_repository_on(store, password: str | None = None) -> Repository:
    """The repository in an object store already opened (a reader that looked at the store first, e.g.
    the fleet report's cache check), with ``password`` or the one in the environment."""
    from steps.secrets import repository_password

    return Repository.open(store, password if password is not None else repository_password())


def repository_id(raw_config: bytes, url: str) -> str:
    """The ID a repository's ``config`` names (checked, not yet authenticated: the MAC is checked
    when the repository is opened)."""
    from steps.repository.config import RepoConfig

    return RepoConfig.parse(raw_config, url)[0].id
