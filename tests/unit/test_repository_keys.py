"""Key derivation."""


def test_the_threaded_kdf_derives_the_same_key_as_the_reference_scrypt():
    import base64
    import os

    from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

    from steps.repository.keys import _derive

    salt = os.urandom(16)
    kdf = {"name": "scrypt", "salt": base64.b64encode(salt).decode(), "n": 1024, "r": 8, "p": 4}
    assert _derive("pässword", kdf) == Scrypt(salt=salt, length=32, n=1024, r=8, p=4).derive(
        "pässword".encode()
    )
