"""The processes that create a restore's small one-blob files, while the restore's own process fetches,
decrypts and checks their content.

Creating a small file costs the kernel more than anything else a restore does per file, and it does
not overlap with the restore's other work when the same interpreter asks for it. So the restore hands
every small file to a helper process (``python -m steps.repository.creator_process FD``, started by
:class:`.helper_process.HelperProcess`), a whole fetched range to one process; with several CPUs it
starts more of them, each with its own ranges (see :mod:`.restore_content`). :class:`ChildCreator`
keeps the restore's side of one (the ranges handed and not yet confirmed); :func:`_serve` is the
child's side. The child creates each file with :func:`.file_creator.create_whole`, the rule the
restore's own thread uses when no child can start (or ``SNAPFLOW_HELPER_PROCESSES=0``).

The child gets nothing but descriptors and plaintext file contents over its socket: a batch's directory
descriptors once (``SCM_RIGHTS``), then ranges of files to create through them (so that it creates
files below the same directories, with the same no-symlink-following opens, as the restore itself).
It answers each range with the bytes written and its warnings, or with the first error, and exits when
its socket closes. Its environment holds only ``PYTHONPATH``: no credentials reach it.

Frames (see :mod:`.helper_process`):

* ``B`` (to the child): batch serial (u64), then its directory descriptors' numbers in the restore's
  process (i32 each); the descriptors themselves travel with the frame (at most ``FDS_PER_FRAME``).
* ``W``: range number (u32), umask (u32), batch serial (u64), number of contents (u32); the contents,
  each a length (u32) and the bytes (a content shared by several files is sent once); then records:
  ``RECORD`` (directory descriptor number, name length, mode, uid, gid, atime, mtime, flags, size,
  content number) with the name; a file of zeros (flag ``ZERO``) has no content.
* ``X``: batch serial (u64): its descriptors are closed. ``E``: no more work; the child answers ``E``
  once every file is created and exits.
* ``R`` (from the child): started. ``D``: range number, bytes written (u64), warnings (u32), each
  a record number (u32), warning code (u8), detail length (u16) and detail. ``F``: range number,
  record number, errno (i32, 0 when not a system error), message length (u16) and message (the
  system error's text, or ``Type: message``).

When a child ends before it confirmed every range (killed, out of memory, a failed send), the restore
creates the files of the ranges it had not confirmed itself (a file the child had created already is
replaced, see :func:`.file_creator.open_new`), with a warning; later ranges go to the other children,
or to the restore's thread when none is left, and no further child is started.
"""

from __future__ import annotations

import itertools
import os
import socket
import struct
import sys

from .file_creator import create_whole
from .helper_process import HEADER, HelperProcess, child_main, frame

# dir fd, name length, mode, uid, gid, atime, mtime, flags, size, content number
RECORD = struct.Struct("<iHIqqqqBII")
RANGE = struct.Struct("<IIQI")  # range number, umask, batch serial, contents
LENGTH = struct.Struct("<I")
DONE = struct.Struct("<IQI")  # range number, bytes written, warnings
WARNING = struct.Struct("<IBH")  # record number, code, detail length
FATAL = struct.Struct("<IIiH")  # range number, record number, errno, message length
SERIAL = struct.Struct("<Q")
ZERO, CHOWN = 1, 2
FDS_PER_FRAME = 250  # SCM_RIGHTS carries at most 253 descriptors per message
MAX_WARNINGS = 1000  # per range: the restore keeps 1 000 in all
PENDING_RANGES = 2  # ranges handed to the child and not yet confirmed: one being created, one waiting
_serials = itertools.count(1)


def pack_record(
    dir_fd: int, name: bytes, mode: int, owner, times, zero: bool, size: int, content: int
) -> bytes:
    """One ``W`` record (raises struct.error for values that do not fit: such a file is created by the
    restore's own thread instead)."""
    flags = (ZERO if zero else 0) | (CHOWN if owner is not None else 0)
    uid, gid = owner if owner is not None else (-1, -1)
    return RECORD.pack(dir_fd, len(name), mode, uid, gid, times[0], times[1], flags, size, content) + name


class ChildCreator:
    """The restore's side of one child: the ranges handed to it and not yet confirmed (``pending``:
    range number -> (batch, files)), in the order sent. A batch (of :mod:`.restore_content`) gets a
    serial of this child's (``serials``) when its directory descriptors are first sent to it."""

    def __init__(self, deliver):
        self.proc = HelperProcess("steps.repository.creator_process", "restore-creator", deliver)
        self.pending: dict[int, tuple[object, list]] = {}
        self.serials: dict[object, int] = {}  # batch -> its serial, while this child holds its descriptors
        self._numbers = itertools.count()
        self.gone = False  # it ended (its end was delivered)
        self.confirmed = False  # it created every file it was given and said so
        self.stopped = False
        self.finishing = False

    def usable(self) -> bool:
        return not self.gone and not self.stopped

    def full(self) -> bool:
        return len(self.pending) >= PENDING_RANGES

    def send_range(self, batch, umask: int, contents: list, records: list[bytes], files: list) -> None:
        serial = self.serials.get(batch)
        if serial is None:  # its directory descriptors first, once per batch
            serial = self.serials[batch] = next(_serials)
            fds = list(batch.fds.values())
            for i in range(0, len(fds), FDS_PER_FRAME):
                chunk = fds[i : i + FDS_PER_FRAME]
                head = SERIAL.pack(serial) + struct.pack(f"<{len(chunk)}i", *chunk)
                self.proc.send(frame(b"B", head), chunk)
        number = next(self._numbers)
        self.pending[number] = (batch, files)
        parts = [RANGE.pack(number, umask, serial, len(contents))]
        for data in contents:
            parts += (LENGTH.pack(len(data)), data)
        parts += records
        self.proc.send([HEADER.pack(b"W", sum(map(len, parts))), *parts])

    def forget(self, batch) -> None:
        """``batch`` is written: the child closes its copies of its descriptors (if it got them)."""
        serial = self.serials.pop(batch, None)
        if serial is not None and not self.gone:
            self.proc.send(frame(b"X", SERIAL.pack(serial)))

    def finish(self) -> None:
        self.finishing = True  # no more ranges: an end without its E answer then leaves nothing to do
        if not self.gone:
            self.proc.send(frame(b"E", b""))

    def stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            self.proc.kill()

    def close(self) -> None:
        if not self.confirmed:
            self.proc.kill()
        self.proc.close()

    @staticmethod
    def done(payload: bytes) -> tuple[int, int, list[tuple[int, int, str]]]:
        """A ``D`` frame's range number, bytes written and warnings (record number, code, detail)."""
        number, written, count = DONE.unpack_from(payload)
        pos = DONE.size
        warnings = []
        for _ in range(count):
            rec, code, length = WARNING.unpack_from(payload, pos)
            pos += WARNING.size
            warnings.append((rec, code, payload[pos : pos + length].decode("utf-8", "replace")))
            pos += length
        return number, written, warnings

    @staticmethod
    def fatal(payload: bytes) -> tuple[int, int, int, str]:
        """An ``F`` frame's range number, record number, errno and message."""
        number, rec, code, length = FATAL.unpack_from(payload)
        return number, rec, code, payload[FATAL.size : FATAL.size + length].decode("utf-8", "replace")


# -- the child's side -----------------------------------------------------------------------------
def _serve(sock: socket.socket) -> None:
    fds_in: list[int] = []  # descriptors received, not yet claimed by a B frame
    batches: dict[int, dict[int, int]] = {}  # batch serial -> {restore's number: our descriptor}
    buf = bytearray(1 << 20)
    have = 0
    ancillary = socket.CMSG_SPACE(FDS_PER_FRAME * 4 + 64)
    is_root = os.geteuid() == 0
    sock.sendall(frame(b"R", b""))

    def fill(need: int) -> bool:
        nonlocal buf, have
        if len(buf) < need:  # grown to the frame, not beyond: a range is at most a pack's worth
            grown = bytearray(need)
            grown[:have] = buf[:have]
            buf = grown
        while have < need:
            n, anc, flags, _addr = sock.recvmsg_into([memoryview(buf)[have:]], ancillary)
            for level, kind, data in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    count = len(data) // 4
                    fds_in.extend(struct.unpack(f"{count}i", data[: count * 4]))
            if flags & socket.MSG_CTRUNC:
                raise OSError("descriptors lost in transit")
            if not n:
                return False
            have += n
        return True

    while True:
        if not fill(HEADER.size):
            return
        kind, length = HEADER.unpack_from(buf)
        if not fill(HEADER.size + length):
            return
        view = memoryview(buf)[HEADER.size : HEADER.size + length]
        reply = None
        if kind == b"W":
            reply = _create_range(view, batches, is_root)
        elif kind == b"B":
            (serial,) = SERIAL.unpack_from(view)
            numbers = struct.unpack_from(f"<{(length - SERIAL.size) // 4}i", view, SERIAL.size)
            mapping = batches.setdefault(serial, {})
            for number in numbers:
                mapping[number] = fds_in.pop(0)
        elif kind == b"X":
            for fd in batches.pop(SERIAL.unpack_from(view)[0], {}).values():
                os.close(fd)
        elif kind == b"E":
            for mapping in batches.values():
                for fd in mapping.values():
                    os.close(fd)
            sock.sendall(frame(b"E", b""))
            return
        else:
            raise ValueError(f"unknown frame {kind!r}")
        del view
        rest = have - HEADER.size - length
        buf[:rest] = buf[HEADER.size + length : have]
        have = rest
        if len(buf) > 4 << 20 and have <= 1 << 20:  # a large range passed: give its memory back
            small = bytearray(1 << 20)
            small[:have] = buf[:have]
            buf = small
        if reply is not None:
            sock.sendall(reply)
            if reply[:1] == b"F":
                return


def _create_range(view: memoryview, batches: dict, is_root: bool) -> bytes:
    """Create one range's files; the ``D`` or ``F`` frame to answer."""
    number, umask, serial, count = RANGE.unpack_from(view)
    fds = batches[serial]
    pos = RANGE.size
    contents = []
    for _ in range(count):
        (length,) = LENGTH.unpack_from(view, pos)
        pos += LENGTH.size
        contents.append(view[pos : pos + length])
        pos += length
    written = 0
    warnings: list[bytes] = []
    warned = 0
    rec = 0

    def warn(code: int, detail: object) -> None:
        nonlocal warned
        warned += 1
        if len(warnings) < MAX_WARNINGS:
            text = ("" if detail is None else str(detail)).encode("utf-8", "replace")[:1000]
            warnings.append(WARNING.pack(rec, code, len(text)) + text)

    end = len(view)
    try:
        while pos < end:
            dir_no, nlen, mode, uid, gid, atime, mtime, flags, size, content = RECORD.unpack_from(view, pos)
            pos += RECORD.size
            name = bytes(view[pos : pos + nlen])
            pos += nlen
            zero = bool(flags & ZERO)
            data = None if zero else contents[content]
            owner = (uid, gid) if flags & CHOWN else None
            written += create_whole(
                fds[dir_no], name, data, size, zero, mode, owner, (atime, mtime), umask, is_root, warn
            )
            rec += 1
    except BaseException as err:
        if isinstance(err, OSError) and err.errno:
            code, text = err.errno, err.strerror or ""
        else:
            code, text = 0, f"{type(err).__name__}: {err}"
        raw = text.encode("utf-8", "replace")[:2000]
        return frame(b"F", FATAL.pack(number, rec, code, len(raw)) + raw)
    kept = min(warned, MAX_WARNINGS)
    return frame(b"D", DONE.pack(number, written, kept) + b"".join(warnings))


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1:], _serve))
