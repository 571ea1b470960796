"""A repository's config id is 32 hex digits, or the repository does not open: readers name local files
(the fleet report's record cache) after it, so a crafted id must never be a path."""

from __future__ import annotations

import json

import pytest

from steps.errors import SnapflowError
from steps.repository.config import RepoConfig


def _config(repo_id) -> bytes:
    return json.dumps(
        {"version": 1, "id": repo_id, "created": "", "chunker": {"min": 1, "avg": 2, "max": 4}}
    ).encode()


@pytest.mark.parametrize("repo_id", ["../../../../tmp/x", "/etc/x", "ABCDEF" * 6, "0" * 31, 7, None])
def test_a_config_id_that_is_no_repository_id_is_refused(repo_id):
    with pytest.raises(SnapflowError) as err:
        RepoConfig.parse(_config(repo_id), "file:///r")
    assert str(err.value).startswith("file:///r/config: ")


def test_a_new_repositorys_id_is_accepted():
    cfg = RepoConfig.new()
    parsed, _ = RepoConfig.parse(_config(cfg.id), "file:///r")
    assert parsed.id == cfg.id
