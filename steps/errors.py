"""The error tree of every step, and the exit codes the workflows' retryStrategy keys on.

::

    SnapflowError                 exit 1   generic failure, not retried
    ├── UsageError                exit 2   bad arguments or input (names the field and what was expected)
    ├── PermanentError            exit 3   retrying cannot help: wrong password, corrupt object, refused
    │   ├── IntegrityError                 stored bytes do not match their name / MAC (never retried)
    │   │   ├── DamagedRecordError         a record (snapshots/, backups/, runs/) that does not open; .keys
    │   │   └── DamagedKeyFileError        a key file under keys/ whose bytes do not match its name; .keys
    │   ├── WrongPasswordError             no key file opens with the given password
    │   └── RepositoryError                missing or unknown repository, format version, ...
    ├── TemporaryError            exit 75  worth retrying later (EX_TEMPFAIL): network, server down, not ready
    │   └── StoreUnavailable               the object store did not answer within the bounded retries
    └── ConsistencyError          exit 4   the application could not be quiesced / the hold was lost

Only :class:`TemporaryError` exit codes are listed in the workflows' ``retryStrategy``; a checksum
mismatch or a lost freeze is never retried automatically.
"""

from __future__ import annotations

import errno

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_PERMANENT = 3
EXIT_CONSISTENCY = 4
EXIT_TEMPORARY = 75

RETRYABLE_EXIT_CODES = (EXIT_TEMPORARY,)


class SnapflowError(Exception):
    """Base of every error a step reports; ``str(err)`` is the one-line message shown to the user."""

    exit_code = EXIT_FAILURE


class UsageError(SnapflowError):
    exit_code = EXIT_USAGE


class PermanentError(SnapflowError):
    exit_code = EXIT_PERMANENT


class IntegrityError(PermanentError):
    pass


class DamagedRecordError(IntegrityError):
    """A command refuses to choose around a damaged record (or a missing one a backup names).

    ``keys`` are the object keys concerned (``snapshots/<ID>``, ``backups/<GROUP>/<ID>``, ...), first
    the one the message names; ``key`` is that first one."""

    def __init__(self, message: str, keys: list[str] | tuple[str, ...] = ()):
        super().__init__(message)
        self.keys = list(keys)

    @property
    def key(self) -> str | None:
        return self.keys[0] if self.keys else None


class DamagedKeyFileError(IntegrityError):
    """No key opened and some key files are damaged: the password may belong to one of them."""

    def __init__(self, message: str, keys: list[str] | tuple[str, ...] = ()):
        super().__init__(message)
        self.keys = list(keys)


class WrongPasswordError(PermanentError):
    pass


class RepositoryError(PermanentError):
    pass


class TemporaryError(SnapflowError):
    exit_code = EXIT_TEMPORARY

    def __init__(self, message: str, delay: float | None = None):
        super().__init__(message)
        self.delay = delay


class StoreUnavailable(TemporaryError):
    pass


# OS errors that mean "the other side did not answer or went away": worth retrying later (exit 75)
NETWORK_ERRNOS = frozenset(
    {
        errno.ECONNREFUSED,
        errno.ECONNRESET,
        errno.ECONNABORTED,
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        errno.ENETDOWN,
        errno.ETIMEDOUT,
    }
)


def is_network_error(err: BaseException) -> bool:
    """Whether ``err`` is an OS error of the network (a server that did not answer or went away)."""
    return isinstance(err, (ConnectionError, TimeoutError)) or (
        isinstance(err, OSError) and err.errno in NETWORK_ERRNOS
    )


class ConsistencyError(SnapflowError):
    exit_code = EXIT_CONSISTENCY


def printable(text: str) -> str:
    """``text`` with what a terminal would act on (newlines, escape sequences, other control characters)
    escaped: text from a repository or a cluster may be crafted to forge or hide a line of output."""
    if text.isprintable():
        return text
    return "".join(
        c if c.isprintable() else c.encode("unicode_escape", "backslashreplace").decode() for c in text
    )
