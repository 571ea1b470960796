"""A manifests bundle read back from a repository is untrusted: every shape a restore relies on is
checked, and a crafted one is refused in one line naming the file, never with a traceback."""

from __future__ import annotations

import json

import pytest

from steps.errors import PermanentError
from steps.manifests import bundle

PATH = "objects/n/ConfigMap/c.yaml"


def files_with(obj_text: bytes | None = None, index: object = None) -> dict[str, bytes]:
    files = bundle.to_files(
        [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "n"}}],
        {"namespace": "n"},
    )
    if obj_text is not None:
        files[PATH] = obj_text
    if index is not None:
        files["capture.json"] = json.dumps(index).encode()
    return files


HEADER = {"format": "snapflow-manifests", "version": 1}


@pytest.mark.parametrize(
    ("files", "message"),
    [
        (files_with(index=[1, 2]), "capture.json: expected a JSON object"),
        (files_with(index={**HEADER, "objects": {"a": 1}}), "objects: expected a list"),
        (files_with(index={**HEADER, "objects": ["x"]}), r"objects\[0\]: expected an entry with a path"),
        (files_with(index={**HEADER, "objects": [{"path": 7}]}), r"objects\[0\]: expected an entry"),
        (files_with(index={**HEADER, "namespace": ["a"], "objects": []}), "namespace: expected a string"),
        (files_with(b"- a\n- b\n"), f"{PATH}: expected a Kubernetes object"),
        (files_with(b"kind: [\n"), f"{PATH}: not valid YAML"),
        (files_with(b"apiVersion: v1\nmetadata: {name: c}\n"), f"{PATH}: kind: expected a non-empty string"),
        (files_with(b"apiVersion: 1\nkind: X\nmetadata: {name: c}\n"), "apiVersion: expected a non-empty"),
        (files_with(b"apiVersion: v1\nkind: X\nmetadata: {name: [c]}\n"), "metadata.name: expected"),
        (files_with(b"apiVersion: v1\nkind: X\nmetadata: x\n"), "metadata.name: expected"),
        (
            files_with(b"apiVersion: v1\nkind: X\nmetadata: {name: c, namespace: {a: b}}\n"),
            "metadata.namespace",
        ),
    ],
)
def test_crafted_bundle_is_refused_naming_what_is_wrong(files, message):
    with pytest.raises(PermanentError, match=message):
        bundle.from_files(files, "manifests snapshot 12345678")


def test_well_formed_bundle_still_reads_back():
    assert bundle.from_files(files_with()).objects[0]["metadata"] == {"name": "c", "namespace": "n"}
