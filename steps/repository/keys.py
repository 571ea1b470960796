"""Key files: the master secret wrapped by a key derived from a password with scrypt.

Provides :func:`create_key_file` (used by ``init`` and ``key add|passwd``), :func:`open_master_key` (tries
every key file under ``keys/`` with the password) and :func:`kdf_params_for_new_key`. Called by
:mod:`.repo`.

Each key file carries its own KDF parameters, so the cost can be raised later without touching data.
New keys use restic's cost at least: scrypt N=2^15, r=8, p=4. ``SNAPFLOW_KDF_TEST_N`` (a power of two)
lowers N for NEW keys only; it exists so that test suites do not spend seconds per key, and must never
be set in production.
"""

from __future__ import annotations

import base64
import getpass
import json
import os
import socket
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from steps import runtime
from steps.drivers.cpus import available_cpus
from steps.errors import DamagedKeyFileError, IntegrityError, UsageError, WrongPasswordError

from .blob_sink import _env_int
from .crypto import MasterKeys, storage_id

KEY_FORMAT_VERSION = 1
DEFAULT_SCRYPT = {"n": 2**15, "r": 8, "p": 4}
KDF_PARALLEL_BYTES = 64 * 1024 * 1024  # scrypt lanes computed at once need at most this
TEST_N_ENV = runtime.KDF_TEST_N
_KEY_AAD = b"snapflow/v1/key"


def kdf_params_for_new_key() -> dict:
    params = dict(DEFAULT_SCRYPT)
    raw = os.environ.get(TEST_N_ENV)
    if raw:
        try:
            n = int(raw)
        except ValueError:
            n = 0
        if n < 2 or n & (n - 1):
            raise UsageError(
                f"{TEST_N_ENV}: expected a power of two (lowers the KDF cost for tests), got {raw!r}"
            )
        params["n"] = n
        _warn_stderr(
            f"{TEST_N_ENV}={n}: the new key's password is protected with scrypt N={n} instead of"
            f" {DEFAULT_SCRYPT['n']} (for test suites only; never set it in production)"
        )
    return params


def kdf_threads(n: int, r: int, p: int) -> int:
    """How many of scrypt's ``p`` lanes are computed at once. Each needs 128*r*n bytes (32 MiB at
    restic's cost): lanes run together (with pycryptodome, installed with the object-store client) on the
    CPUs available as long as those running at once need at most KDF_PARALLEL_BYTES (two lanes at
    restic's cost: 0.39 -> 0.20 s for p=6 on two cores, for 37 MiB more at start-up), else one after the
    other (a key file's n may ask for up to 4 GiB per lane). ``SNAPFLOW_KDF_THREADS`` sets the count."""
    if os.environ.get(runtime.KDF_THREADS):
        threads = _env_int(runtime.KDF_THREADS, 1)
    else:
        threads = min(available_cpus(), max(1, KDF_PARALLEL_BYTES // (128 * r * n)))
    return min(p, threads)


def _derive(password: str, kdf: dict) -> bytes:
    if kdf.get("name") != "scrypt":
        raise IntegrityError(f"key file uses unknown KDF {kdf.get('name')!r}")
    salt = base64.b64decode(kdf["salt"])
    n, r, p = int(kdf["n"]), int(kdf["r"]), int(kdf["p"])
    if n < 2 or n & (n - 1) or not (1 <= r <= 64) or not (1 <= p <= 64) or n > 2**22:
        raise IntegrityError(f"key file has invalid scrypt parameters n={n} r={r} p={p}")
    threads = kdf_threads(n, r, p)
    if threads > 1:
        try:
            from Crypto.Protocol.KDF import scrypt
        except ImportError:
            pass
        else:
            return scrypt(password.encode(), salt, 32, n, r, p, threads=threads)
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(password.encode())


@dataclass
class KeyFile:
    id: str
    doc: dict
    problem: str | None = None  # why the file cannot be used (its bytes do not match its name, ...)

    @property
    def key(self) -> str:
        return f"keys/{self.id}"


def create_key_file(
    keys: MasterKeys, repo_id: str, password: str, kdf_params: dict | None = None
) -> tuple[str, bytes]:
    """Wrap the master secret for ``password``; returns (key ID, stored bytes) for ``keys/<ID>``."""
    if not password:
        raise UsageError("password: expected a non-empty password")
    params = dict(kdf_params or kdf_params_for_new_key())
    kdf = {
        "name": "scrypt",
        "n": params["n"],
        "r": params["r"],
        "p": params["p"],
        "salt": base64.b64encode(os.urandom(32)).decode(),
    }
    kek = _derive(password, kdf)
    nonce = os.urandom(12)
    inner = json.dumps({"secret": base64.b64encode(keys.secret).decode(), "repository": repo_id}).encode()
    sealed = nonce + AESGCM(kek).encrypt(nonce, inner, _KEY_AAD)
    try:
        user = getpass.getuser()
    except Exception:
        user = ""
    doc = {
        "version": KEY_FORMAT_VERSION,
        "created": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "host": socket.gethostname(),
        "user": user,
        "kdf": kdf,
        "data": base64.b64encode(sealed).decode(),
    }
    data = (json.dumps(doc, indent=1) + "\n").encode()
    return storage_id(data), data


def try_open(doc: dict, password: str) -> tuple[MasterKeys, str] | None:
    """The master keys and repository ID if ``password`` opens this key file, else None.
    IntegrityError (one line) when the file is of an unknown format or malformed."""
    if not isinstance(doc, dict):
        raise IntegrityError("key file is not a JSON object")
    if doc.get("version") != KEY_FORMAT_VERSION:
        raise IntegrityError(f"key file format version {doc.get('version')!r} is not supported")
    kdf = doc.get("kdf")
    if not isinstance(kdf, dict):
        raise IntegrityError("key file has no kdf object")
    try:
        kek = _derive(password, kdf)
        sealed = base64.b64decode(doc["data"], validate=True)
    except KeyError as err:
        raise IntegrityError(f"key file lacks the field {err.args[0]!r}") from None
    except (TypeError, ValueError) as err:  # (binascii.Error is a ValueError)
        raise IntegrityError(f"key file has a malformed field ({type(err).__name__})") from None
    try:
        inner = json.loads(AESGCM(kek).decrypt(sealed[:12], sealed[12:], _KEY_AAD))
    except InvalidTag:
        return None
    except ValueError:  # too short to hold a nonce and a tag
        raise IntegrityError("key file data is truncated") from None
    try:
        return MasterKeys(base64.b64decode(inner["secret"])), inner["repository"]
    except (KeyError, TypeError, ValueError):
        raise IntegrityError("key file opened, but what it holds is malformed") from None


def _warn_stderr(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr)


def open_master_key(
    key_files: Iterable[KeyFile],
    password: str,
    repo_url: str,
    warn: Callable[[str], None] = _warn_stderr,
) -> tuple[MasterKeys, str, str]:
    """Try each key file; returns (keys, repository ID, key ID). A key file of an unknown format or a
    malformed one is skipped with a warning (one bad file must not lock everyone out), and so is a
    damaged one (its bytes do not match its name). When none opens: DamagedKeyFileError naming the
    damaged key files if there are any (the password may be theirs), else WrongPasswordError."""
    tried = 0
    skipped = 0
    damaged: list[KeyFile] = []
    for kf in key_files:
        if kf.problem:
            damaged.append(kf)
            continue
        try:
            opened = try_open(kf.doc, password)
        except IntegrityError as err:
            skipped += 1
            warn(f"key {kf.id[:8]} of {repo_url} skipped: {err}")
            continue
        tried += 1
        if opened is not None:
            for bad in damaged:
                warn(
                    f"key file {bad.key} of {repo_url} is damaged ({bad.problem}): it opens nothing; restore"
                    f" it from a copy, or remove it with `key remove --key {bad.id[:8]}`"
                )
            return opened[0], opened[1], kf.id
    if damaged:
        names = ", ".join(bad.key for bad in damaged[:3]) + (" ..." if len(damaged) > 3 else "")
        problem = damaged[0].problem
        if tried == 0:
            raise DamagedKeyFileError(
                f"repository {repo_url}: its key file {names} is damaged ({problem}), and no other key file"
                " is intact, so no password can be checked; restore the file from a copy or from the"
                " bucket's old versions",
                [bad.key for bad in damaged],
            )
        raise DamagedKeyFileError(
            f"none of the {tried} intact key(s) of {repo_url} opens with the given password, and the key"
            f" file {names} is damaged ({problem}): if the password belongs to that key, restore the file"
            " from a copy or from the bucket's old versions; otherwise the password is wrong"
            f" ({runtime.PASSWORD} / {runtime.PASSWORD_FILE})",
            [bad.key for bad in damaged],
        )
    if tried == 0:
        if skipped:
            raise IntegrityError(
                f"repository {repo_url}: none of its {skipped} key file(s) under keys/ is of a known format"
            )
        raise IntegrityError(f"repository {repo_url} has no key files under keys/")
    also = f" ({skipped} unusable key file(s) skipped)" if skipped else ""
    raise WrongPasswordError(
        f"wrong password: none of the {tried} key(s) of {repo_url} opens with the given password{also}"
        f" ({runtime.PASSWORD} / {runtime.PASSWORD_FILE})"
    )
