"""The tests that check every example policy fail when there is none to check (a missing, empty or
unreadable examples/ folder: an unreadable one lists as empty)."""

from __future__ import annotations

import re

import pytest

from tests.fixtures import policies


def test_the_examples_are_found():
    assert {p.name for p in policies.example_files()} >= {"postgresql-statefulset.yaml", "mongodb.yaml"}


def test_an_empty_examples_folder_fails_instead_of_checking_nothing(tmp_path, monkeypatch):
    # GIVEN an examples folder without policies
    monkeypatch.setattr(policies, "EXAMPLES", tmp_path)
    # WHEN the tests ask for every example THEN they fail, naming the folder
    with pytest.raises(pytest.fail.Exception, match=re.escape(f"{tmp_path}: no example policies")):
        policies.example_files()


def test_a_missing_examples_folder_fails(tmp_path, monkeypatch):
    monkeypatch.setattr(policies, "EXAMPLES", tmp_path / "gone")
    with pytest.raises(pytest.fail.Exception, match="no example policies"):
        policies.example_files()
