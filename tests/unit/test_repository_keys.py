"""Key derivation: scrypt's lanes computed together give the reference key, and run together only on the
CPUs available and within KDF_PARALLEL_BYTES."""

import base64
import os

import pytest
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from steps import runtime
from steps.repository import keys


@pytest.mark.parametrize("threads", ["1", "2", "3"])
@pytest.mark.parametrize(
    ("n", "r", "p"), [(1024, 8, 4), (2048, 8, 3), (1024, 1, 7), (16, 8, 64), (4096, 2, 1)]
)
def test_the_threaded_kdf_derives_the_same_key_as_the_reference_scrypt(monkeypatch, threads, n, r, p):
    monkeypatch.setenv(runtime.KDF_THREADS, threads)
    salt = os.urandom(16)
    kdf = {"name": "scrypt", "salt": base64.b64encode(salt).decode(), "n": n, "r": r, "p": p}
    assert keys._derive("pässword", kdf) == Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(
        "pässword".encode()
    )


def test_lanes_run_together_on_the_cpus_available_within_the_memory_bound(monkeypatch):
    monkeypatch.delenv(runtime.KDF_THREADS, raising=False)
    monkeypatch.setattr(keys, "available_cpus", lambda: 2)
    assert keys.kdf_threads(2**15, 8, 6) == 2  # restic's cost: two 32 MiB lanes at once
    assert keys.kdf_threads(2**15, 8, 1) == 1  # one lane
    assert keys.kdf_threads(2**16, 8, 6) == 1  # 64 MiB lanes: one at a time
    assert keys.kdf_threads(2**22, 8, 6) == 1  # what a crafted key file may ask for: 4 GiB a lane
    monkeypatch.setattr(keys, "available_cpus", lambda: 1)
    assert keys.kdf_threads(2**15, 8, 6) == 1
    monkeypatch.setattr(keys, "available_cpus", lambda: 8)
    assert keys.kdf_threads(2**15, 8, 6) == 2  # 64 MiB at most, whatever the CPUs
    assert keys.kdf_threads(2**13, 8, 6) == 6
    monkeypatch.setenv(runtime.KDF_THREADS, "3")
    assert keys.kdf_threads(2**15, 8, 6) == 3  # as told
    assert keys.kdf_threads(2**15, 8, 2) == 2
