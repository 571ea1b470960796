"""The ``config`` object: format version, repository ID and chunker parameters.

Stored in plain JSON so that a reader can refuse an unknown format version before it does anything
else, and authenticated with a MAC under the master key (checked once a key opened), so that an
attacker cannot change the chunker parameters unnoticed. Called by :mod:`.repo`.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from steps.errors import IntegrityError, RepositoryError

from .crypto import MasterKeys

FORMAT_VERSION = 1
SUPPORTED_VERSIONS = (1,)
_ID = re.compile(r"[0-9a-f]{32}")

CHUNK_MIN = 256 * 1024
CHUNK_AVG = 1024 * 1024
CHUNK_MAX = 4 * 1024 * 1024
PACK_TARGET = 8 * 1024 * 1024


@dataclass(frozen=True)
class RepoConfig:
    version: int
    id: str
    created: str
    chunk_min: int = CHUNK_MIN
    chunk_avg: int = CHUNK_AVG
    chunk_max: int = CHUNK_MAX
    pack_size: int = PACK_TARGET

    @classmethod
    def new(cls) -> RepoConfig:
        return cls(FORMAT_VERSION, uuid.uuid4().hex, datetime.now(UTC).isoformat().replace("+00:00", "Z"))

    def _body(self) -> dict:
        return {
            "version": self.version,
            "id": self.id,
            "created": self.created,
            "chunker": {
                "algorithm": "fastcdc-keyed",
                "min": self.chunk_min,
                "avg": self.chunk_avg,
                "max": self.chunk_max,
            },
            "pack_size": self.pack_size,
            "cipher": "aes-256-gcm",
            "compression": "zstd",
            "blob_id": "blake3-keyed",
            "object_id": "blake3",
        }

    def to_bytes(self, keys: MasterKeys) -> bytes:
        body = self._body()
        body["mac"] = keys.mac(json.dumps(body, sort_keys=True).encode())
        return (json.dumps(body, indent=1) + "\n").encode()

    @classmethod
    def parse(cls, data: bytes, url: str) -> tuple[RepoConfig, dict]:
        """Parse and check the version; the MAC is checked later by :meth:`check_mac`."""
        try:
            doc = json.loads(data)
        except ValueError:
            raise RepositoryError(f"{url}/config is not valid JSON: not a Snapflow repository") from None
        version = doc.get("version") if isinstance(doc, dict) else None
        if version not in SUPPORTED_VERSIONS:
            raise RepositoryError(
                f"{url}: repository format version {version!r} is not supported by this Snapflow"
                f" (supports {', '.join(map(str, SUPPORTED_VERSIONS))}); upgrade Snapflow"
            )
        ch = doc.get("chunker", {})
        try:
            cfg = cls(
                version,
                doc["id"],
                doc.get("created", ""),
                int(ch["min"]),
                int(ch["avg"]),
                int(ch["max"]),
                int(doc.get("pack_size", PACK_TARGET)),
            )
        except (KeyError, TypeError, ValueError):
            raise RepositoryError(f"{url}/config: missing or invalid fields") from None
        if not isinstance(cfg.id, str) or not _ID.fullmatch(cfg.id):
            # readers name local files after it (caches): never a path
            raise RepositoryError(f"{url}/config: id is not a repository ID (32 hex digits)")
        return cfg, doc

    @staticmethod
    def check_mac(doc: dict, keys: MasterKeys, url: str) -> None:
        body = {k: v for k, v in doc.items() if k != "mac"}
        if doc.get("mac") != keys.mac(json.dumps(body, sort_keys=True).encode()):
            raise IntegrityError(f"{url}/config: MAC mismatch (config was altered or belongs to another key)")
