"""Reading a site's CSV: numbers in, NaN for missing, and every bad file refused with a message
that names the file and the column or line at fault."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from federation import csv_stream
from federation.csv_stream import MISSING_TOKENS
from federation.data import (
    Table,
    TableReader,
    check_columns,
    check_for_job,
    check_target_values,
    read_csv,
)
from federation.errors import InputError
from federation.long_format import read_long

LABEL = "north.csv"


def read_error(content: bytes, *, label: str = LABEL) -> str:
    """The message of the InputError that reading ``content`` raises."""
    with pytest.raises(InputError) as raised:
        read_csv(content, label=label)
    return str(raised.value)


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal float64 arrays to the bit (NaN and -0.0 included)."""
    return a.shape == b.shape and np.array_equal(
        np.ascontiguousarray(a, dtype=np.float64).view(np.int64),
        np.ascontiguousarray(b, dtype=np.float64).view(np.int64),
    )


def make_table(columns: tuple[str, ...], rows: list[list[float]]) -> Table:
    return Table(label=LABEL, columns=columns, values=np.array(rows, dtype=np.float64))


# ---------------------------------------------------------------- what reads


def test_reads_a_path_with_its_path_as_label(tmp_path: Path) -> None:
    """A file on disk reads to float64 values; errors would name it by its path."""
    path = tmp_path / "central.csv"
    path.write_bytes(b"age,bmi\n70,22.5\n58,27.25\n")

    table = read_csv(path)

    assert table.label == str(path)
    assert table.columns == ("age", "bmi")
    assert table.values.dtype == np.float64
    assert table.values.tolist() == [[70.0, 22.5], [58.0, 27.25]]
    assert table.rows == 2


def test_reads_bytes_with_the_given_label() -> None:
    """Uploaded bytes read the same way, and keep the label they were given."""
    table = read_csv(b"a,b\n1,2\n3,4\n", label="upload.csv")

    assert table.label == "upload.csv"
    assert table.columns == ("a", "b")
    assert table.values.tolist() == [[1.0, 2.0], [3.0, 4.0]]


def test_bytes_without_label_are_called_uploaded_file() -> None:
    """With no label, an error about bytes still says what it is about."""
    with pytest.raises(InputError, match="uploaded file"):
        read_csv(b"")


@pytest.mark.parametrize("token", MISSING_TOKENS)
def test_missing_tokens_read_as_nan(token: str) -> None:
    """Empty, NA, NaN, nan, N/A and NULL are all missing cells."""
    table = read_csv(f"a,b\n1,{token}\n2,3\n".encode(), label=LABEL)

    assert np.isnan(table.values[0, 1])
    assert table.values[1].tolist() == [2.0, 3.0]


def test_every_missing_token_in_one_file() -> None:
    """All the tokens together, in one column, give NaN and leave the numbers alone."""
    body = "".join(f"{i},{token}\n" for i, token in enumerate(MISSING_TOKENS))
    table = read_csv(f"a,b\n{body}9,8\n".encode(), label=LABEL)

    assert np.isnan(table.values[:-1, 1]).all()
    assert table.values[-1].tolist() == [9.0, 8.0]
    assert not np.isnan(table.values[:, 0]).any()


def test_byte_order_mark_is_not_part_of_the_first_name(tmp_path: Path) -> None:
    """Excel's UTF-8 BOM is dropped, from bytes and from a file."""
    content = b"\xef\xbb\xbfage,bmi\n70,22.5\n"
    path = tmp_path / "bom.csv"
    path.write_bytes(content)

    for table in (read_csv(content, label=LABEL), read_csv(path)):
        assert table.columns == ("age", "bmi")
        assert table.values.tolist() == [[70.0, 22.5]]


def test_windows_line_endings_and_quoted_names() -> None:
    """CRLF files and quoted header names read like any other."""
    table = read_csv(b'"a","b"\r\n1,2\r\n3,4\r\n', label=LABEL)

    assert table.columns == ("a", "b")
    assert table.values.tolist() == [[1.0, 2.0], [3.0, 4.0]]


def test_column_lookup_by_name() -> None:
    """Table.column gives the 0-based position, or an error naming file and column."""
    table = read_csv(b"a,b\n1,2\n", label=LABEL)

    assert table.column("b") == 1
    with pytest.raises(InputError, match=r"north\.csv.*'zz'"):
        table.column("zz")


# ---------------------------------------------------------------- what is refused


def test_empty_file() -> None:
    """A file with no bytes at all says it is empty and that a header is expected."""
    message = read_error(b"")

    assert LABEL in message
    assert "empty" in message
    assert "header" in message


def test_blank_lines_only_is_empty() -> None:
    """Whitespace and newlines only count as empty too."""
    assert "empty" in read_error(b"\n \n")


def test_missing_file_is_named(tmp_path: Path) -> None:
    """A path that does not exist is an InputError naming it, not a traceback."""
    path = tmp_path / "absent.csv"
    with pytest.raises(InputError) as raised:
        read_csv(path)

    assert str(path) in str(raised.value)
    assert "no such file" in str(raised.value)


@pytest.mark.parametrize("content", [b"a,b\n", b"a,b", b"a,b\r\n"])
def test_header_only(content: bytes) -> None:
    """A header without data rows is refused: nothing to impute or to fit."""
    message = read_error(content)

    assert LABEL in message
    assert "header but no data rows" in message


def test_duplicate_column_names() -> None:
    """The duplicate is named, with both positions."""
    message = read_error(b"age,bmi,age\n1,2,3\n")

    assert LABEL in message
    assert "duplicate column name 'age'" in message
    assert "1" in message and "3" in message


def test_duplicate_after_byte_order_mark() -> None:
    """The BOM does not hide a duplicate of the first column."""
    assert "duplicate column name 'a'" in read_error(b"\xef\xbb\xbfa,a\n1,2\n")


@pytest.mark.parametrize(
    ("content", "position"),
    [(b"a,,c\n1,2,3\n", 2), (b"a,b,\n1,2,3\n", 3), (b"a, ,c\n1,2,3\n", 2)],
)
def test_column_without_name(content: bytes, position: int) -> None:
    """An empty (or blank) header cell is refused and its position given."""
    message = read_error(content)

    assert LABEL in message
    assert f"column {position}" in message
    assert "no name" in message


def test_non_numeric_column_names_column_value_and_line() -> None:
    """The message names the column, quotes the first bad value and gives its line."""
    message = read_error(b"age,sex\n70,1\n58,male\n61,female\n")

    assert LABEL in message
    assert "'sex'" in message
    assert "not numeric" in message
    assert "'male'" in message
    assert "line 3" in message
    assert "2 such cells" in message


def test_non_numeric_from_a_path(tmp_path: Path) -> None:
    """From disk too, the message names the file by its path."""
    path = tmp_path / "south.csv"
    path.write_bytes(b"a,b\n1,x\n")
    with pytest.raises(InputError) as raised:
        read_csv(path)

    message = str(raised.value)
    assert str(path) in message
    assert "'b'" in message and "'x'" in message and "line 2" in message


def test_every_non_numeric_column_is_named() -> None:
    """Two bad columns are both reported, so one fix round suffices."""
    message = read_error(b"a,b,c\n1,x,y\n2,3,z\n")

    assert "'b'" in message and "'x'" in message
    assert "'c'" in message and "'y'" in message


def test_missing_token_with_spaces_is_explained() -> None:
    """A padded ' NA' either reads as missing or is named: never an unexplained refusal."""
    try:
        table = read_csv(b"a,b\n1, NA\n2,3\n", label=LABEL)
    except InputError as error:
        message = str(error)
        assert "'b'" in message, message
        assert "line 2" in message, message
    else:
        assert np.isnan(table.values[0, 1])


def test_line_numbers_count_blank_lines() -> None:
    """The line named is the line of the file, even after a blank line."""
    message = read_error(b"a,b\n1,2\n\n3,x\n")

    assert "'x'" in message
    assert "line 4" in message, message


def test_row_with_too_many_fields() -> None:
    """A row wider than the header names its line and both widths."""
    message = read_error(b"a,b\n1,2\n3,4,5\n")

    assert LABEL in message
    assert "line 3" in message
    assert "3 fields" in message
    assert "2 columns" in message


def test_row_with_too_few_fields() -> None:
    """A short row is a ragged row too, not silently padded with missing cells."""
    message = read_error(b"a,b,c\n1,2,3\n4,5\n6,7,8\n")

    assert LABEL in message
    assert "line 3" in message
    assert "2 fields" in message


@pytest.mark.parametrize("content", [b"a,b\n1,2,3\n4,5,6\n", b"a,b\n1,2,3\n4,5\n"])
def test_extra_field_on_first_data_row_is_not_taken_as_row_names(content: bytes) -> None:
    """A wider first row must be refused, never read shifted one column to the left."""
    message = read_error(content)

    assert "line 2" in message
    assert "3 fields" in message


@pytest.mark.parametrize("cell", ["inf", "-inf", "Infinity", "-Infinity"])
def test_infinite_values(cell: str) -> None:
    """An infinite cell is refused with its column and line."""
    message = read_error(f"a,b\n1,2\n3,{cell}\n".encode())

    assert LABEL in message
    assert "'b'" in message
    assert "infinite" in message
    assert "line 3" in message


def test_not_utf8_in_header() -> None:
    """Latin-1 bytes in the header: the file is named as not UTF-8."""
    message = read_error("\xe2ge,b\n1,2\n".encode("latin-1"))

    assert LABEL in message
    assert "UTF-8" in message


def test_not_utf8_in_header_from_path(tmp_path: Path) -> None:
    path = tmp_path / "latin.csv"
    path.write_bytes("\xe2ge,b\n1,2\n".encode("latin-1"))
    with pytest.raises(InputError, match="UTF-8") as raised:
        read_csv(path)

    assert str(path) in str(raised.value)


def test_not_utf8_after_the_header() -> None:
    """Latin-1 bytes in a data row are an InputError too, not a UnicodeDecodeError."""
    message = read_error("a,b\n1,2\n3,caf\xe9\n".encode("latin-1"))

    assert LABEL in message
    assert "UTF-8" in message


def test_not_utf8_deep_in_a_large_file(tmp_path: Path) -> None:
    """A bad byte far beyond the first read buffer of a file is still an InputError."""
    path = tmp_path / "big.csv"
    path.write_bytes(b"a,b\n" + b"1,2\n" * 20_000 + "3,caf\xe9\n".encode("latin-1"))
    with pytest.raises(InputError, match="UTF-8") as raised:
        read_csv(path)

    assert str(path) in str(raised.value)


# ---------------------------------------------------------------- against the job


def test_check_columns_accepts_the_same_header() -> None:
    check_columns(make_table(("a", "b"), [[1, 2]]), ["a", "b"])


def test_check_columns_missing_column() -> None:
    """A column the job has and the site lacks is named as missing."""
    with pytest.raises(InputError) as raised:
        check_columns(make_table(("a", "b"), [[1, 2]]), ["a", "b", "c"])

    message = str(raised.value)
    assert LABEL in message
    assert "missing 'c'" in message
    assert "unexpected" not in message


def test_check_columns_unexpected_column() -> None:
    """A column the site has and the job lacks is named as unexpected."""
    with pytest.raises(InputError) as raised:
        check_columns(make_table(("a", "b", "z"), [[1, 2, 3]]), ["a", "b"])

    message = str(raised.value)
    assert LABEL in message
    assert "unexpected 'z'" in message
    assert "missing" not in message


def test_check_columns_missing_and_unexpected() -> None:
    """A renamed column shows both sides of the difference."""
    with pytest.raises(InputError) as raised:
        check_columns(make_table(("a", "BMI"), [[1, 2]]), ["a", "bmi"])

    message = str(raised.value)
    assert "missing 'bmi'" in message
    assert "unexpected 'BMI'" in message


def test_check_columns_reordered() -> None:
    """Same names in another order are matched by name."""
    check_columns(make_table(("b", "a"), [[1, 2]]), ["a", "b"])


def test_check_binary_accepts_zero_one_and_missing() -> None:
    check_target_values(make_table(("y",), [[0], [1], [np.nan], [1]]), 0, "logistic")


def test_check_binary_shows_examples_with_lines() -> None:
    """Cells other than 0/1 are counted, and the first few shown with their lines."""
    table = make_table(("x", "smoker"), [[1, 0], [2, 0.5], [3, 1], [4, 2], [5, -1], [6, 7]])
    with pytest.raises(InputError) as raised:
        check_target_values(table, 1, "logistic")

    message = str(raised.value)
    assert LABEL in message
    assert "'smoker'" in message
    assert "4 cell(s)" in message
    assert "0.5 (line 3)" in message
    assert "2 (line 5)" in message
    assert "-1 (line 6)" in message
    assert "line 7" not in message  # at most three examples


# ---------------------------------------------------------------- line endings and large files


@pytest.mark.parametrize("ending", [b"\r", b"\r\n", b"\n"], ids=["CR", "CRLF", "LF"])
def test_every_line_ending_reads_alike(ending: bytes) -> None:
    """Old Mac files end their lines with CR alone: they read like any other, line numbers
    and blank lines included."""
    content = ending.join([b"a,b", b"1,2", b"", b"3,NA", b"5,6"]) + ending
    table = read_csv(content, label=LABEL)

    assert table.columns == ("a", "b")
    assert table.values[[0, 2]].tolist() == [[1.0, 2.0], [5.0, 6.0]]
    assert np.isnan(table.values[1, 1])
    assert table.lines is not None and table.lines.tolist() == [2, 4, 5]
    message = read_error(ending.join([b"a,b", b"1,2", b"", b"3,x"]) + ending)
    assert "'x'" in message and "line 4" in message, message


def test_cr_only_header_without_rows() -> None:
    assert "header but no data rows" in read_error(b"a,b\r")


def test_a_file_of_many_blocks_reads_whole_and_names_far_lines(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A file larger than the blocks it is read in (small blocks here, 2 MiB in use): every
    row, in order, and an error far in names its own line (and a ragged line too)."""
    monkeypatch.setattr(csv_stream, "_BLOCK", 1000)
    rows = 20_000
    values = np.arange(rows * 2, dtype=np.float64).reshape(rows, 2)
    body = "\n".join(f"{int(a)},{int(b)}" for a, b in values).encode()
    content = b"a,b\n" + body + b"\n"

    table = read_csv(content, label=LABEL)
    assert table.rows == rows and np.array_equal(table.values, values)
    assert table.line(rows - 1) == rows + 1

    far = content.replace(b"\n30000,", b"\nfar,", 1)
    message = read_error(far)
    assert "'a'" in message and "'far'" in message and "line 15002" in message, message
    ragged = content.replace(b"\n36000,36001\n", b"\n36000,36001,9\n", 1)
    assert "line 18002 has 3 fields" in read_error(ragged)
    blank = content.replace(b"\n30000,", b"\n\n\n30000,", 1).replace(b"\n36000,", b"\n36000x,")
    assert "line 18004 has '36000x'" in read_error(blank)


def test_a_quoted_cell_across_a_block_boundary_is_one_cell(monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks are cut only where quotes are closed: a quoted cell holding a line break stays
    whole (and is refused as not numeric, on its line), quoted numbers read as numbers."""
    monkeypatch.setattr(csv_stream, "_BLOCK", 64)
    content = b"a,b\n" + b'"1.5","2"\n' * 30 + b'3,"4\n5"\n' + b'"1.5","2"\n' * 30
    message = read_error(content)
    assert "'b'" in message and "line 32" in message, message
    table = read_csv(content.replace(b'"4\n5"', b'"45"'), label=LABEL)
    assert table.rows == 61
    assert table.values[30].tolist() == [3.0, 45.0] and table.values[-1].tolist() == [1.5, 2.0]


# ---------------------------------------------------------------- one check for every upload


def test_check_for_job_names_file_and_column_and_can_hide_values() -> None:
    """The checks a site and central run on an upload: columns, every target observed at
    least once, 0/1 in binary targets; ``show_values=False`` gives lines but no value."""
    table = make_table(("x", "y", "b"), [[1, np.nan, 0], [2, np.nan, 0.25], [3, np.nan, 1]])
    targets = [("b", "logistic")]

    with pytest.raises(InputError, match=r"north\.csv: columns differ.*missing 'z'"):
        check_for_job(table, ["x", "y", "b", "z"], targets)
    with pytest.raises(InputError) as raised:
        check_for_job(table, ["x", "y", "b"], targets)
    assert "'b'" in str(raised.value) and "0.25 (line 3)" in str(raised.value)
    with pytest.raises(InputError) as raised:
        check_for_job(table, ["x", "y", "b"], targets, show_values=False)
    message = str(raised.value)
    assert LABEL in message and "'b'" in message and "line(s) 3" in message
    assert "0.25" not in message
    check_for_job(table, ["x", "y", "b"], [("y", "gaussian")])  # the sites' rows can fit it
    with pytest.raises(InputError, match=r"north\.csv: column 'y' is a target but every cell"):
        check_for_job(table, ["x", "y", "b"], [("y", "gaussian")], alone=True)
    check_for_job(table, ["x", "y", "b"], [("x", "gaussian")], alone=True)


# ---------------------------------------------------------------- the plain reader, the exact one


def test_the_plain_reader_equals_the_exact_one() -> None:
    """Plain blocks go through Arrow; the same bytes through the exact reader give the same
    numbers to the bit and the same line numbers (blank lines, CRLF, every missing token)."""
    rng = np.random.default_rng(4)
    values = rng.normal(size=(3000, 4)) * 10.0 ** rng.integers(-20, 20, size=(3000, 4))
    values[rng.random(values.shape) < 0.2] = np.nan
    tokens = rng.choice(MISSING_TOKENS, size=values.shape)
    cells = [
        [
            repr(float(v)) if not np.isnan(v) else str(t)
            for v, t in zip(row, row_tokens, strict=True)
        ]
        for row, row_tokens in zip(values, tokens, strict=True)
    ]
    text = "\n".join(",".join(row) for row in cells)
    for content in (
        ("a,b,c,d\n" + text + "\n").encode(),
        ("a,b,c,d\r\n" + text.replace("\n", "\r\n") + "\r\n").encode(),
        ("a,b,c,d\n" + text.replace("\n", "\n\n", 3)).encode(),  # blank lines, no final LF
    ):
        layout = csv_stream.layout_of(content, LABEL)
        body = content[layout.body_start :]
        lines = csv_stream._data_lines(body, 2, layout, LABEL)
        plain = csv_stream._parse_plain(body, layout, frozenset())
        assert plain is not None
        exact, _ = csv_stream._parse_exact(body, lines, layout, LABEL, frozenset())
        blank = csv_stream._blank_rows(body, *plain)  # Arrow reads them as rows of missing cells
        assert (blank is not None) == (b"\n\n" in body)
        kept = plain[0] if blank is None else plain[0][~blank]
        assert same_bits(kept, exact) and same_bits(kept, values)
        table = read_csv(content, label=LABEL)
        assert same_bits(table.values, values)
        assert [table.line(r) for r in range(table.rows)] == lines.tolist()


@pytest.mark.parametrize("ending", [b"\n", b"\r\n"], ids=["LF", "CRLF"])
def test_a_row_of_missing_cells_is_a_row_and_a_blank_line_is_none(ending: bytes) -> None:
    """A row whose every cell is missing (empty or a missing token) is read, a blank line
    beside it is skipped and counted, with a text column or without."""
    lines = [b"a,b,t", b"1,2,x", b",,", b"", b"NA,NaN,NA", b"", b"3,4,y"]
    content = ending.join(lines) + ending

    table = read_csv(content, label=LABEL, text=("t",))
    assert same_bits(
        table.values, np.array([[1, 2, np.nan], [np.nan] * 3, [np.nan] * 3, [3, 4, np.nan]])
    )
    assert table.lines is not None and table.lines.tolist() == [2, 3, 5, 7]
    assert table.text["t"].tolist() == ["x", None, None, "y"]
    numeric = read_csv(
        ending.join(line.rpartition(b",")[0] for line in lines) + ending, label=LABEL
    )
    assert same_bits(numeric.values, table.values[:, :2])
    assert numeric.lines is not None and numeric.lines.tolist() == [2, 3, 5, 7]
    single = read_csv(ending.join([b"a", b"1", b"", b"NA", b"2"]) + ending, label=LABEL)
    assert same_bits(single.values, np.array([[1.0], [np.nan], [2.0]]))
    assert single.lines is not None and single.lines.tolist() == [2, 4, 5]


def test_a_carriage_return_inside_a_line_is_refused_with_its_line() -> None:
    """A CR that ends no CRLF splits no row: the line is read as the exact reader reads it."""
    message = read_error(b"a,b\n1,2\n3,4\r5,6\n7,8\n")

    assert "line 3" in message and "3 fields" in message, message


def test_an_infinite_value_after_blank_lines_names_its_line() -> None:
    message = read_error(b"a,b\n1,2\n\n\n3,inf\n")

    assert "'b'" in message and "infinite" in message and "line 5" in message, message


# ---------------------------------------------------------------- read as it arrives


def mixed_csv(ending: bytes = b"\r\n") -> bytes:
    """R's write.csv of a table with a text column (row names, quoted cells, a cell with a
    comma and one with a line break), then plain numbers with blank lines and missing tokens,
    all behind Excel's BOM: blocks of both readers, quoted and plain."""
    rows = [b'"","id","x","y"']
    for i in range(40):
        if i % 10 == 3:
            rows.append(b'"%d","two\nlines",%d.5,"-0.0"' % (i, i))
        elif i < 20:
            rows.append(b'"%d","a, %d",%r,NA' % (i, i, 1 / (i + 3)))
        else:
            rows.append(b"%d,b%d,%r,%s" % (i, i, -1e-5 * i, b"" if i % 3 else b"2.5e300"))
        if i % 7 == 6:
            rows.append(b"")
    return b"\xef\xbb\xbf" + ending.join(rows) + ending


def read_in_pieces(content: bytes, cuts: list[int]) -> Table:
    reader = TableReader(label=LABEL, text={"id"})
    for start, stop in zip([0, *cuts], [*cuts, len(content)], strict=True):
        reader.feed(content[start:stop])
    return reader.finish()


def same_table(a: Table, b: Table) -> bool:
    return (
        a.columns == b.columns
        and same_bits(a.values, b.values)
        and [a.line(r) for r in range(a.rows)] == [b.line(r) for r in range(b.rows)]
        and a.text.keys() == b.text.keys()
        and all(a.text[k].tolist() == b.text[k].tolist() for k in a.text)
        and a.notes == b.notes
    )


@pytest.mark.parametrize("ending", [b"\r\n", b"\n", b"\r"], ids=["CRLF", "LF", "CR"])
def test_read_in_any_pieces_equals_the_whole_file_read_at_once(
    ending: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An upload is parsed as it arrives, in blocks of whole lines: pieces of any size (a
    byte at a time, a row or a CRLF split between two, a quoted line break across a cut) give
    the table of the whole file parsed as one block, to the bit, with its lines, text cells,
    the row names left out and a note saying so."""
    content = mixed_csv(ending)
    monkeypatch.setattr(csv_stream, "_BLOCK", 1 << 30)
    whole = read_in_pieces(content, [])
    assert whole.columns == ("id", "x", "y") and whole.rows == 40
    assert whole.text["id"][3] == "two\nlines" and whole.text["id"][4] == "a, 4"
    assert whole.values[4, 1] == 1 / 7 and np.isnan(whole.values[0, 2])
    assert whole.values[3, 2] == 0 and np.signbit(whole.values[3, 2])
    assert whole.values[21, 2] == 2.5e300 and whole.values[21, 1] == -1e-5 * 21
    assert np.isnan(whole.values[20, 2])
    newline = b"\r" if ending == b"\r" else b"\n"  # a lone LF in CRLF ends a line, as in R
    assert whole.lines is not None and whole.line(39) == content.count(newline)
    assert whole.notes and "row names" in whole.notes[0]

    rng = np.random.default_rng(7)
    monkeypatch.setattr(csv_stream, "_BLOCK", 96)  # many blocks, most of them plain
    for cuts in (
        list(range(1, len(content))),
        sorted(rng.choice(len(content), size=30, replace=False).tolist()),
        [content.index(ending + b"30,") + 1],  # a CRLF split between two pieces
    ):
        assert same_table(read_in_pieces(content, cuts), whole), cuts[:5]
    assert same_table(read_csv(content, label=LABEL, text={"id"}), whole)


def test_only_a_block_of_the_file_is_held_while_it_is_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(csv_stream, "_BLOCK", 256)
    content = b"a,b\n" + b"".join(b"%d,%d.25\n" % (i, i) for i in range(2000))
    reader = TableReader(label=LABEL)
    held = 0
    for start in range(0, len(content), 100):
        reader.feed(content[start : start + 100])
        held = max(held, len(reader._stream._pending))
    table = reader.finish()
    assert held < 256 + 100 and table.rows == 2000 and table.lines is None
    assert same_bits(table.values[:, 1], np.arange(2000) + 0.25)


@pytest.mark.parametrize("piece", [1, 5, 4096])
def test_an_error_in_a_later_block_names_its_line(
    piece: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ragged row, a text cell or an infinite value far into a file read in pieces is named
    by its line in the file, blank lines and quoted line breaks before it counted."""
    monkeypatch.setattr(csv_stream, "_BLOCK", 64)
    head = b"a,b\n" + b'1,"2"\n' * 3 + b"\n" * 2 + b"3,4\n" * 100  # lines 2 to 106
    cases = {
        b"5,6,7\n": "line 107 has 3 fields but the header has 2 columns",
        b"5,six\n": "column 'b' is not numeric: line 107 has 'six'",
        b"-inf,6\n": "column 'a' has an infinite value on line 107",
        b'"5\n",6\n8\n': "line 109 has 1 fields",
    }
    for bad, expected in cases.items():
        content = head + bad + b"9,9\n" * 50
        with pytest.raises(InputError) as raised:
            read_in_pieces(content, list(range(piece, len(content), piece)))
        assert str(raised.value).startswith(f"{LABEL}: ") and expected in str(raised.value)


@pytest.mark.parametrize("read", [read_csv, read_long], ids=["read_csv", "read_long"])
def test_a_file_that_cannot_be_opened_is_named_with_why(
    tmp_path: Path, read: Callable[..., object]
) -> None:
    """Both readers name the file and say why in the same words (``errors.unreadable``)."""
    folder = tmp_path / "results.csv"
    folder.mkdir()
    with pytest.raises(InputError, match="results.csv: is a folder, not a CSV file"):
        read(folder, label="results.csv")
    with pytest.raises(InputError, match="absent.csv: no such file"):
        read(tmp_path / "absent.csv", label="absent.csv")
