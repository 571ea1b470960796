"""CSV exports a spreadsheet opens safely: a cell from a repository or a fleet file (which a writer with
the key, or a fleet file's author, chose) that starts like a formula (``=``, ``+``, ``-``, ``@``, tab,
carriage return) is prefixed with ``'`` so that it is shown as text, never evaluated; control characters
are escaped. Used by ``snapflow audit --format csv`` and the fleet report's CSV."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence

from steps.errors import printable

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value) -> str:
    """One cell as text: None is empty, a formula-like start is quoted, control characters escaped."""
    if value is None:
        return ""
    text = value if isinstance(value, str) else str(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return text  # a number stays a number (a negative one is no formula)
    if text.startswith(FORMULA_START):
        text = "'" + text
    return printable(text)


def csv_text(header: Sequence[str], rows: Iterable[Sequence]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([safe_cell(v) for v in row])
    return buf.getvalue()
