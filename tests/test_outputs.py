"""Output files: R mice's long layout, exact numbers, whole numbers kept whole, all or nothing."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from federation import outputs
from federation.job import JobSpec, Target
from federation.outputs import (
    CHAINS_NAME,
    LONG_NAME,
    METHODS_NAME,
    ORIGINAL_NAME,
    R_NAME,
    REPORT_NAME,
    ZIP_NAME,
    chains_csv,
    long_chunks,
    long_csv,
    methods_csv,
    write_outputs,
    zip_bytes,
    zip_chunks,
)
from federation.runtime import JobResult
from federation.zipstream import _FINAL_BLOCK, ZipStream, deflate
from tests.helpers import run, table

AWKWARD = [0.1, 1 / 3, 1e-300, 123456789.123456789, -2.5e-8]


def _result() -> JobResult:
    values = np.array(
        [
            [1.0, np.nan, 0.0],
            [2.0, 0.5, np.nan],
            [3.0, np.nan, 1.0],
        ]
    )
    spec = JobSpec(
        job_id="j",
        algorithm="SIMI",
        version="1",
        digest="d",
        columns=("id", "x", "flag"),
        targets=(Target(2, "x", "gaussian"),),
        params={"imputations": 2},
        seed=1,
        sites=(),
    )
    # Missing cells in row-major order: x of row 1, flag of row 2, x of row 3.
    cells = [np.array([AWKWARD[0], 1.0, AWKWARD[1]]), np.array([AWKWARD[2], 0.0, AWKWARD[3]])]
    return JobResult(
        spec=spec,
        table=table("central.csv", spec.columns, values),
        imputed_cells=cells,
        report={"algorithm": "SIMI", "seconds": 0.5},
    )


def test_long_csv_has_the_mice_layout() -> None:
    """.imp 0 is the original with NA, then 1..M; .id counts rows from 1; columns in order."""
    frame = pd.read_csv(io.BytesIO(long_csv(_result())))

    assert list(frame.columns) == [".imp", ".id", "id", "x", "flag"]
    assert frame[".imp"].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert frame[".id"].tolist() == [1, 2, 3] * 3
    assert frame.loc[frame[".imp"] == 0, "x"].isna().tolist() == [True, False, True]
    assert not frame.loc[frame[".imp"] > 0, ["x", "flag"]].isna().any().any()


def test_numbers_read_back_exactly_and_whole_columns_stay_whole() -> None:
    text = long_csv(_result()).decode()

    frame = pd.read_csv(io.StringIO(text))

    imputed = frame.loc[frame[".imp"] > 0, "x"].to_numpy()
    assert imputed.tolist() == [AWKWARD[0], 0.5, AWKWARD[1], AWKWARD[2], 0.5, AWKWARD[3]]
    assert text.splitlines()[1] == "0,1,1,NA,0"


def test_zip_holds_one_csv_per_imputation_and_is_deterministic() -> None:
    result = _result()

    first = zip_bytes(result)

    assert first == zip_bytes(result)
    with zipfile.ZipFile(io.BytesIO(first)) as archive:
        assert archive.namelist() == [
            "imputation_1.csv", "imputation_2.csv", ORIGINAL_NAME, METHODS_NAME, R_NAME,
        ]  # fmt: skip
        second = pd.read_csv(archive.open("imputation_2.csv"))
    assert list(second.columns) == ["id", "x", "flag"]
    assert second["x"].tolist() == [AWKWARD[2], 0.5, AWKWARD[3]]
    assert second["flag"].tolist() == [0, 0, 1]


def test_the_zip_holds_what_r_needs_beside_the_data() -> None:
    """original.csv is the long CSV's .imp 0 (the data with its missing cells), methods.csv
    names each target's method, and fip_mids.R is the shipped function, byte for byte."""
    result = _result()

    with zipfile.ZipFile(io.BytesIO(zip_bytes(result))) as archive:
        original = archive.read(ORIGINAL_NAME)
        methods = archive.read(METHODS_NAME).decode()
        function = archive.read(R_NAME)

    long = pd.read_csv(io.BytesIO(long_csv(result)))
    expected = long.loc[long[".imp"] == 0, ["id", "x", "flag"]].reset_index(drop=True)
    pd.testing.assert_frame_equal(pd.read_csv(io.BytesIO(original)), expected)
    assert original.splitlines()[2] == b"2,0.5,NA"
    assert methods == "column,method,mice,class,levels\nx,gaussian,norm,numeric,\n"
    shipped = Path(outputs.__file__).parent / "r" / R_NAME
    assert function == shipped.read_bytes()
    assert b"fip_mids <- function(path, chains = NULL, methods = NULL)" in function


def test_methods_csv_names_mice_s_method_and_r_s_class_for_every_method() -> None:
    """One row per target in the job's order: a factor's levels are the data's codes (logistic:
    0 and 1), numbers as the data's CSV writes them."""
    targets = (
        Target(2, "age (y)", "gaussian"),
        Target(3, "tv", "pmm"),
        Target(4, "smoker", "logistic"),
        Target(5, "region", "categorical", (1.0, 2.0, 4.0)),
        Target(6, "stage", "ordinal", (1.0, 2.0, 3.0, 2.5)),
        Target(7, "visits", "poisson"),
    )

    rows = methods_csv(targets).decode().splitlines()

    assert rows == [
        "column,method,mice,class,levels",
        "age (y),gaussian,norm,numeric,",
        "tv,pmm,pmm,numeric,",
        "smoker,logistic,logreg,factor,0;1",
        "region,categorical,polyreg,factor,1;2;4",
        "stage,ordinal,polr,ordered,1;2;3;2.5",
        "visits,poisson,poisson,numeric,",
    ]


def test_a_chained_job_s_zip_holds_its_chains(tmp_path: Path) -> None:
    """SIMICE: the zip and the folder hold chains.csv, the same bytes as chains_csv."""
    rng = np.random.default_rng(5)
    values = rng.normal(size=(40, 2))
    values[rng.random(40) < 0.3, 1] = np.nan
    result = run("SIMICE", table("central", ("x", "y"), values), {}, [("y", "gaussian")])

    with zipfile.ZipFile(io.BytesIO(zip_bytes(result))) as archive:
        names = archive.namelist()
        chains = archive.read(CHAINS_NAME)
    written = {p.name: p.read_bytes() for p in write_outputs(result, tmp_path)}

    assert names[-4:] == [ORIGINAL_NAME, METHODS_NAME, CHAINS_NAME, R_NAME]
    assert chains == chains_csv(result.report) == written[CHAINS_NAME]
    assert chains.decode().splitlines()[0] == "target,chain,cycle,mean,variance"
    assert written[METHODS_NAME] == b"column,method,mice,class,levels\ny,gaussian,norm,numeric,\n"


def test_write_outputs_writes_its_files(tmp_path: Path) -> None:
    written = write_outputs(_result(), tmp_path / "out")

    assert sorted(p.name for p in written) == sorted(
        [ZIP_NAME, LONG_NAME, REPORT_NAME, METHODS_NAME, R_NAME]
    )
    assert json.loads((tmp_path / "out" / REPORT_NAME).read_text())["algorithm"] == "SIMI"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(p.name for p in written)


def test_write_outputs_is_all_or_nothing(tmp_path: Path) -> None:
    """When a file cannot be written, earlier results stay and no new file appears."""
    out = tmp_path / "out"
    out.mkdir()
    (out / ZIP_NAME).write_bytes(b"previous results")
    (out / f".{LONG_NAME}.partial").mkdir()  # makes the second write fail

    with pytest.raises(OSError):
        write_outputs(_result(), out)

    assert (out / ZIP_NAME).read_bytes() == b"previous results"
    assert sorted(p.name for p in out.iterdir()) == [f".{LONG_NAME}.partial", ZIP_NAME]


# ---------------------------------------------------------------- the writer against the old one


def _old_frame(columns: tuple[str, ...], values: np.ndarray) -> pd.DataFrame:
    """The writer before polars (pandas ``to_csv``), kept here as the reference of values."""
    frame = pd.DataFrame(values, columns=list(columns))
    for name in columns:
        column = frame[name].to_numpy()
        observed = column[~np.isnan(column)]
        if np.all(observed == np.round(observed)) and np.all(np.abs(observed) < 2**53):
            frame[name] = frame[name].astype("Int64")
    return frame


def _old_csv(frame: pd.DataFrame) -> bytes:
    text: str = frame.to_csv(index=False, na_rep="NA", lineterminator="\n")
    return text.encode()


def _old_long_csv(result: JobResult) -> bytes:
    m_total = len(result.imputed_cells)
    stacked = np.vstack([result.dataset(m) for m in range(m_total + 1)])
    frame = _old_frame(result.table.columns, stacked)
    frame.insert(0, ".id", np.tile(np.arange(1, result.table.rows + 1), m_total + 1))
    frame.insert(0, ".imp", np.repeat(np.arange(m_total + 1), result.table.rows))
    return _old_csv(frame)


def _parsed(content: bytes) -> tuple[list[str], np.ndarray, list[list[str]]]:
    """Header, the cells as float64 (NaN for NA), and the texts of the first two rows."""
    lines = content.decode().splitlines()
    frame = pd.read_csv(io.BytesIO(content), na_values=["NA"], keep_default_na=False)
    return list(frame.columns), frame.to_numpy(dtype=np.float64), [r.split(",") for r in lines[1:3]]


def _awkward_result(rows: int = 700) -> JobResult:
    """Numbers that printing tends to get wrong: tiny, huge, subnormal, negative zero, long
    fractions, whole numbers up to 2**53, a column that imputation leaves whole (0/1)."""
    rng = np.random.default_rng(11)
    special = np.array([1e-300, 5e-324, -0.0, 1e20, 1e16, 123456789.123456789, -2.5e-8, 1e-5])
    values = np.column_stack(
        [
            np.arange(rows, dtype=np.float64) * 9007199254740.0,  # whole, large
            rng.normal(size=rows) * 10.0 ** rng.integers(-12, 12, size=rows),
            rng.choice(special, size=rows),
            rng.integers(0, 2, size=rows).astype(np.float64),  # binary target
            rng.normal(size=rows).round(2),
        ]
    )
    missing = rng.random(values.shape) < 0.3
    missing[:, 0] = False
    values[missing] = np.nan
    count = int(missing.sum())
    columns = ("id", "x, quoted", "special", "flag", "y")
    where = np.broadcast_to(np.arange(5), values.shape)[missing]
    cells = []
    for _ in range(3):
        imputed = rng.normal(size=count) * 10.0 ** rng.integers(-8, 8, size=count)
        imputed[where == 2] = rng.choice(special, size=int((where == 2).sum()))
        imputed[where == 3] = rng.integers(0, 2, size=int((where == 3).sum()))
        cells.append(imputed)
    spec = JobSpec(
        job_id="j",
        algorithm="SIMICE",
        version="1",
        digest="d",
        columns=columns,
        targets=(Target(3, "flag", "logistic"),),
        params={"imputations": 3},
        seed=1,
        sites=(),
    )
    return JobResult(
        spec=spec, table=table("central.csv", columns, values), imputed_cells=cells, report={}
    )


def test_values_equal_the_old_writers_in_float64(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every dataset, read back, equals in float64 what the pandas writer wrote (NaN where it
    wrote NA), with the same header and the same columns written as whole numbers; the file
    is written in many chunks here (a few rows each), which changes nothing."""
    monkeypatch.setattr(outputs, "_CHUNK_CELLS", 37)
    result = _awkward_result()

    new_header, new_values, new_rows = _parsed(long_csv(result))
    old_header, old_values, old_rows = _parsed(_old_long_csv(result))
    assert new_header == old_header == [".imp", ".id", "id", "x, quoted", "special", "flag", "y"]
    assert np.array_equal(new_values, old_values, equal_nan=True)
    assert np.array_equal(np.signbit(new_values), np.signbit(old_values))
    whole = [[cell.lstrip("-").isdigit() for cell in row] for row in new_rows]
    assert whole == [[cell.lstrip("-").isdigit() for cell in row] for row in old_rows]
    assert long_csv(result).splitlines()[0] == b'.imp,.id,id,"x, quoted",special,flag,y'

    with zipfile.ZipFile(io.BytesIO(zip_bytes(result))) as archive:
        assert archive.testzip() is None
        for m in (1, 2, 3):
            old = _old_csv(_old_frame(result.table.columns, result.dataset(m)))
            new = archive.read(f"imputation_{m}.csv")
            _, new_values, new_rows = _parsed(new)
            _, old_values, old_rows = _parsed(old)
            assert np.array_equal(new_values, old_values, equal_nan=True), m
            assert np.array_equal(np.signbit(new_values), np.signbit(old_values)), m
            whole = [[cell.lstrip("-").isdigit() for cell in row] for row in new_rows]
            assert whole == [[cell.lstrip("-").isdigit() for cell in row] for row in old_rows]


def test_chunks_make_the_same_files_as_one_piece(monkeypatch: pytest.MonkeyPatch) -> None:
    """The long CSV's bytes do not depend on how it is cut; the zip's entries neither."""
    result = _awkward_result()
    whole_long = long_csv(result)
    with zipfile.ZipFile(io.BytesIO(zip_bytes(result))) as archive:
        whole_entries = {name: archive.read(name) for name in archive.namelist()}

    monkeypatch.setattr(outputs, "_CHUNK_CELLS", 23)
    pieces = list(long_chunks(result))
    assert len(pieces) > 10 and b"".join(pieces) == whole_long
    with zipfile.ZipFile(io.BytesIO(b"".join(zip_chunks(result)))) as archive:
        assert {name: archive.read(name) for name in archive.namelist()} == whole_entries


def test_outputs_are_byte_identical_for_the_same_seed(tmp_path: Path) -> None:
    """Two runs of the same job with the same seed write the same bytes, file by file."""
    rng = np.random.default_rng(3)
    columns = ("x", "g", "b")

    def values(rows: int) -> np.ndarray:
        x = rng.normal(size=rows)
        g = 1.0 + x + rng.normal(size=rows)
        b = (rng.random(rows) < 0.5).astype(np.float64)
        out = np.column_stack([x, g, b])
        out[rng.random(rows) < 0.25, 1] = np.nan
        out[rng.random(rows) < 0.25, 2] = np.nan
        return out

    central = table("central", columns, values(600))  # one chunk either way: size is not the point
    sites = {"north": table("north", columns, values(400))}
    targets = [("g", "gaussian"), ("b", "logistic")]
    written = []
    for attempt in ("first", "second"):
        result = run("SIMICE", central, sites, targets, seed=42, imputations=3)
        paths = write_outputs(result, tmp_path / attempt)
        written.append({p.name: p.read_bytes() for p in paths if p.name != REPORT_NAME})
    assert written[0] == written[1]
    with zipfile.ZipFile(io.BytesIO(written[0][ZIP_NAME])) as archive:
        assert archive.testzip() is None
        assert archive.namelist()[:4] == [
            "imputation_1.csv", "imputation_2.csv", "imputation_3.csv", ORIGINAL_NAME,
        ]  # fmt: skip
        third = archive.read("imputation_3.csv")
    frame = pd.read_csv(io.BytesIO(written[0][LONG_NAME]))
    assert frame[".imp"].max() == 3 and len(frame) == 4 * 600
    in_long = frame.loc[frame[".imp"] == 3, list(columns)].to_numpy(dtype=np.float64)
    assert np.array_equal(pd.read_csv(io.BytesIO(third)).to_numpy(dtype=np.float64), in_long)


@pytest.mark.parametrize("zip64", [False, True], ids=["zip32", "zip64"])
def test_the_streamed_zip_reads_in_zipfile_and_unzip(tmp_path: Path, zip64: bool) -> None:
    """Entries of chunks deflated one by one, sizes in data descriptors (and in zip64 fields
    when asked): Python's zipfile and Info-ZIP's unzip both read it and check every CRC."""
    texts = {"a.csv": [b"x,y\n" + b"1.25,NA\n" * 3000, b"", b"2,3\n" * 5000], "b.csv": [b""]}
    stream = ZipStream()
    parts = []
    for name, chunks in texts.items():
        parts.append(stream.begin(name, zip64=zip64))
        parts.extend(stream.add(chunk, deflate(chunk, 1)) for chunk in chunks)
        parts.append(stream.end())
    parts.append(stream.finish())
    content = b"".join(parts)

    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        assert archive.testzip() is None
        assert archive.namelist() == ["a.csv", "b.csv"]
        assert archive.read("a.csv") == b"".join(texts["a.csv"]) and archive.read("b.csv") == b""
    unzip = shutil.which("unzip")
    if unzip is not None:
        path = tmp_path / "test.zip"
        path.write_bytes(content)
        checked = subprocess.run([unzip, "-t", str(path)], capture_output=True, text=True)
        assert checked.returncode == 0 and "No errors detected" in checked.stdout, checked.stdout


@pytest.mark.parametrize("level", [0, 1, 3])
def test_chunks_deflated_apart_at_every_level_inflate_to_the_text(level: int) -> None:
    """ISA-L's chunks, sync-flushed and put end to end with the final block, are one deflate
    stream that zlib inflates to the text, ending where the stream says it ends."""
    chunks = [b"x,y\n", b"0.123456789,NA\n" * 20_000, b"", b"17,3\n" * 999]
    stream = b"".join(deflate(chunk, level) for chunk in chunks) + _FINAL_BLOCK
    inflater = zlib.decompressobj(-15)

    assert inflater.decompress(stream) == b"".join(chunks)
    assert inflater.eof and inflater.unused_data == b""


def test_a_deflate_level_outside_isal_s_is_refused() -> None:
    with pytest.raises(ValueError, match="deflate level 6 is not one of ISA-L's"):
        deflate(b"x", 6)
