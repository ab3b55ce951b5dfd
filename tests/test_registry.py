"""Algorithm packages: every built-in is valid and runs; broken uploads are refused by name."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from federation.errors import AlgorithmInvalid, InputError
from federation.registry import (
    BUILTIN_DIR,
    Registry,
    file_names,
    load_algorithm,
    load_folder,
    package_digest,
)
from federation.simulation import smoke_test


def _builtin_folders() -> list[Path]:
    return sorted(p for p in BUILTIN_DIR.iterdir() if (p / "params.json").is_file())


def test_builtins_are_registered() -> None:
    """Every folder in algorithms/ is in the registry, loaded through the upload path."""
    registry = Registry.with_builtins()

    assert registry.names() == [p.name for p in _builtin_folders()]
    assert {"SIMI", "SIMICE"} <= set(registry.names())


@pytest.mark.parametrize("folder", _builtin_folders(), ids=lambda p: p.name)
def test_every_builtin_has_both_halves_a_valid_schema_and_runs(folder: Path) -> None:
    """The registry-wide check: load, validate, then one run on synthetic data."""
    algorithm = load_folder(folder)

    result = smoke_test(algorithm)

    assert algorithm.name == folder.name
    assert set(algorithm.files) == set(file_names(folder.name))
    assert len(result.imputed_cells) == 2
    assert result.report["fits"], "a run records at least one fit"
    for site in result.report["sites"]:
        assert site["rows_used"] > 0


def _files(name: str = "SIMI") -> dict[str, bytes]:
    folder = BUILTIN_DIR / "SIMI"
    central, remote, params = file_names("SIMI")
    meta = json.loads((folder / params).read_bytes())
    meta["name"] = name
    return {
        f"{name}Central.py": (folder / central).read_bytes(),
        f"{name}Remote.py": (folder / remote).read_bytes(),
        "params.json": json.dumps(meta).encode(),
    }


def _with(files: dict[str, bytes], name: str, content: bytes) -> dict[str, bytes]:
    return {**files, name: content}


def _meta(files: dict[str, bytes], **changes: object) -> dict[str, bytes]:
    meta = json.loads(files["params.json"])
    meta.update(changes)
    return _with(files, "params.json", json.dumps(meta).encode())


def test_a_copy_under_another_name_loads() -> None:
    """An uploaded package is just files: the same code under a new name is a new algorithm."""
    algorithm = load_algorithm("MYSIMI", _files("MYSIMI"))

    assert algorithm.name == "MYSIMI"
    assert algorithm.digest == package_digest(algorithm.files)


@pytest.mark.parametrize(
    ("name", "change", "message"),
    [
        ("S I", lambda f: f, "must start with a letter"),
        ("X", lambda f: {k: v for k, v in f.items() if k != "XRemote.py"}, "missing XRemote.py"),
        ("X", lambda f: _with(f, "extra.py", b""), "unexpected extra.py"),
        ("X", lambda f: _with(f, "params.json", b"{not json"), "params.json is not valid JSON"),
        ("X", lambda f: _meta(f, name="Y"), "names 'Y'"),
        ("X", lambda f: _meta(f, capabilities={"targets": "two"}), "capabilities.targets"),
        (
            "X",
            lambda f: _meta(f, capabilities={"targets": "single", "target_types": ["negbin"]}),
            "target_types",
        ),
        ("X", lambda f: _meta(f, parameters={"type": "object", "properties": 3}), "JSON Schema"),
        ("X", lambda f: _meta(f, parameters={"type": "object", "properties": {}}), "imputations"),
        (
            "X",
            lambda f: _meta(
                f,
                parameters={
                    "type": "object",
                    "properties": {"imputations": {"type": "integer", "default": "five"}},
                },
            ),
            "default does not fit",
        ),
        ("X", lambda f: _with(f, "XCentral.py", b"def run(:\n"), "XCentral.py line 1"),
        ("X", lambda f: _with(f, "XCentral.py", b"import nothing_here\n"), "failed to load"),
        ("X", lambda f: _with(f, "XCentral.py", b"def run(job): pass\n"), "async def run"),
        ("X", lambda f: _with(f, "XRemote.py", b"HANDLERS = {}\n"), "prepare"),
        (
            "X",
            lambda f: _with(f, "XRemote.py", b"def prepare(s): pass\nHANDLERS = {'a': 1}\n"),
            "HANDLERS must map",
        ),
        (
            "X",
            lambda f: _with(f, "XRemote.py", b"def prepare(s): pass\nHANDLERS = {}\n"),
            "HANDLERS",
        ),
        ("X", lambda f: _with(f, "XRemote.py", b"\xff\xfe"), "not UTF-8"),
    ],
)
def test_invalid_packages_are_refused_naming_the_file(
    name: str, change: Callable[[dict[str, bytes]], dict[str, bytes]], message: str
) -> None:
    """Each contract breach gives AlgorithmInvalid with a message that says what and where."""
    files = change(_files(name))

    with pytest.raises(AlgorithmInvalid, match=message):
        load_algorithm(name, files)


def test_versions_are_kept_and_the_latest_is_the_default() -> None:
    registry = Registry()
    first = load_algorithm("X", _files("X"))
    second = load_algorithm("X", _meta(_files("X"), version="3.0.0"))

    registry.add(first)
    registry.add(second)

    assert [a.version for a in registry.versions("X")] == [first.version, "3.0.0"]
    assert registry.get("X") is second
    assert registry.get("X", first.version) is first


def test_same_version_with_other_files_is_refused() -> None:
    registry = Registry()
    registry.add(load_algorithm("X", _files("X")))
    changed = _meta(_files("X"), description="other text")

    with pytest.raises(AlgorithmInvalid, match="new version"):
        registry.add(load_algorithm("X", changed))


def test_unknown_algorithm_and_version_name_what_exists() -> None:
    registry = Registry.with_builtins()

    with pytest.raises(
        InputError, match="known: AVGMMI, AVGMMICE, CSLMI, CSLMICE, IMI, IMICE, SIMI, SIMICE"
    ):
        registry.get("NOPE")
    with pytest.raises(InputError, match="no version '9'"):
        registry.get("SIMI", "9")


def test_digest_depends_on_every_file_and_name() -> None:
    files = _files("X")

    base = package_digest(files)

    assert package_digest(dict(reversed(list(files.items())))) == base
    assert package_digest(_with(files, "XRemote.py", files["XRemote.py"] + b"\n")) != base
    renamed = {("a" + k if k == "params.json" else k): v for k, v in files.items()}
    assert package_digest(renamed) != base
