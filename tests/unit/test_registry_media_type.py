"""A manifest's listed media type against its document (the digest covers the bytes, not the type)."""

from __future__ import annotations

import pytest

from steps.drivers.registry_reference import DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST
from steps.drivers.registry_stage import type_contradiction

IMAGE = {"schemaVersion": 2, "config": {"digest": "sha256:" + "a" * 64, "size": 2}, "layers": []}
INDEX = {"schemaVersion": 2, "manifests": []}


@pytest.mark.parametrize(
    ("doc", "media_type"),
    [
        ({**IMAGE, "mediaType": OCI_MANIFEST}, OCI_MANIFEST),
        (IMAGE, DOCKER_MANIFEST),  # no mediaType of its own: the shape decides
        ({"schemaVersion": 2, "layers": [{"digest": "sha256:" + "b" * 64}]}, OCI_MANIFEST),
        ({**INDEX, "mediaType": OCI_INDEX}, OCI_INDEX),
        (INDEX, DOCKER_LIST),
    ],
)
def test_a_document_of_the_listed_type_fits(doc, media_type):
    assert type_contradiction(doc, media_type) is None


@pytest.mark.parametrize(
    ("doc", "media_type", "said"),
    [
        ({**INDEX, "mediaType": OCI_INDEX}, OCI_MANIFEST, "own mediaType"),
        ({**IMAGE, "mediaType": OCI_MANIFEST}, OCI_INDEX, "own mediaType"),
        (INDEX, OCI_MANIFEST, "image manifest"),  # an index listed as an image loses its children
        (IMAGE, DOCKER_LIST, "index"),
        ({**INDEX, "layers": []}, OCI_INDEX, "index"),
        ({"schemaVersion": 2}, OCI_MANIFEST, "image manifest"),
        ([], OCI_MANIFEST, "JSON object"),
        ({**IMAGE, "mediaType": "\x1b[2Jx"}, OCI_MANIFEST, "\\x1b"),  # quoted, never acted on
    ],
)
def test_a_document_that_contradicts_the_listed_type_is_named(doc, media_type, said):
    why = type_contradiction(doc, media_type)
    assert why is not None and said in why
