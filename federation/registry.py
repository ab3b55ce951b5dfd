"""Algorithm packages: loading, validating, digesting and versioning them.

A package is three files: ``<Name>Central.py`` (``async def run(job)``), ``<Name>Remote.py``
(``prepare(site)`` and ``HANDLERS``, optionally ``LOCAL``) and ``params.json`` (name, version,
description, capabilities, the JSON Schema of the parameters and the declared shape of every
reply: see ``federation.replies``). Built-ins in ``algorithms/`` go through exactly the same path
as an uploaded package.

Reading a package (:func:`read_algorithm`) checks it from its bytes and runs none of it; its
halves execute only when they are used. A site never executes a central half, and executes an
uploaded remote half only in a sandbox process (``federation.sandbox``) after its user approved
the digest.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import linecache
import re
import sys
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from types import CodeType, ModuleType
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from algorithms import methods
from federation.errors import AlgorithmInvalid, InputError
from federation.params import resolve_params
from federation.replies import ReplySchema

BUILTIN_DIR = Path(__file__).resolve().parent.parent / "algorithms"
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,39}$")


@dataclass(frozen=True)
class Capabilities:
    multiple_targets: bool
    target_types: tuple[str, ...]
    uses_sites: bool = True
    """False for methods on central's data alone (IMI, IMICE): a job of one lists no site."""


@dataclass(frozen=True)
class Algorithm:
    """A validated algorithm version. Reading it runs none of its code: its modules are loaded
    (executed) on first use of :attr:`central` or :attr:`remote`, and a site never uses
    :attr:`central`."""

    name: str
    version: str
    description: str
    capabilities: Capabilities
    schema: Mapping[str, Any]
    files: Mapping[str, bytes]
    digest: str
    replies: ReplySchema
    builtin: bool = False
    """Shipped with the portal in ``algorithms/``: its remote half runs in the portal's process."""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @cached_property
    def central(self) -> ModuleType:
        """The central half, executed now if it was not yet (central only)."""
        with self._lock:
            file_name = file_names(self.name)[0]
            module = _load_module(self.name, file_name, self.files[file_name], self.digest)
            _check_central(file_name, module)
            return module

    @cached_property
    def remote(self) -> ModuleType:
        """The remote half, executed now in this process (built-ins, central, simulation)."""
        with self._lock:
            file_name = file_names(self.name)[1]
            module = _load_module(self.name, file_name, self.files[file_name], self.digest)
            _check_remote(file_name, module)
            self.replies.check_handlers(file_name, list(module.HANDLERS))
            return module

    def parameter_problem(self, params: Mapping[str, Any]) -> str | None:
        """Why ``params`` do not fit this version's schema (None: they do). A site checks the
        parameters central sent, since they bound what the job may ask of it."""
        try:
            resolve_params(self.schema, params)
        except InputError as error:
            return str(error)
        return None

    @property
    def remote_source(self) -> str:
        return self.files[file_names(self.name)[1]].decode()

    def check_targets(self, types: Iterable[str]) -> None:
        """Raise ``InputError`` when the targets do not fit this algorithm's capabilities."""
        types = list(types)
        if len(types) > 1 and not self.capabilities.multiple_targets:
            raise InputError(
                f"{self.name} imputes one target; {len(types)} were given "
                "(use a chained-equations algorithm such as SIMICE for several)"
            )
        for kind in types:
            if kind not in self.capabilities.target_types:
                raise InputError(
                    f"{self.name} does not support {kind} targets; it takes "
                    + ", ".join(self.capabilities.target_types)
                )


def file_names(name: str) -> tuple[str, str, str]:
    return f"{name}Central.py", f"{name}Remote.py", "params.json"


def package_digest(files: Mapping[str, bytes]) -> str:
    """SHA-256 over the package's files, each as name, NUL, length, NUL, content, by name."""
    digest = hashlib.sha256()
    for name in sorted(files):
        content = files[name]
        digest.update(f"{name}\0{len(content)}\0".encode())
        digest.update(content)
    return digest.hexdigest()


def read_algorithm(name: str, files: Mapping[str, bytes], *, builtin: bool = False) -> Algorithm:
    """Validate a package from its bytes alone: names, params.json (parameters and declared
    replies) and the syntax of both halves. Nothing of it runs; ``AlgorithmInvalid`` names the
    file at fault."""
    if not _NAME.match(name):
        raise AlgorithmInvalid(
            f"algorithm name {name!r} must start with a letter and hold only letters, digits "
            "and underscores (at most 40)"
        )
    central_file, remote_file, params_file = file_names(name)
    expected = {central_file, remote_file, params_file}
    if set(files) != expected:
        missing = sorted(expected - set(files))
        extra = sorted(set(files) - expected)
        detail = "; ".join(
            part
            for part in (
                f"missing {', '.join(missing)}" if missing else "",
                f"unexpected {', '.join(extra)}" if extra else "",
            )
            if part
        )
        raise AlgorithmInvalid(f"algorithm {name} needs exactly {sorted(expected)}: {detail}")
    meta = _read_params(name, files[params_file])
    replies = ReplySchema.parse(meta)
    digest = package_digest(files)
    for file_name in (central_file, remote_file):
        _compile(name, file_name, files[file_name], digest)
    caps = meta["capabilities"]
    return Algorithm(
        name=name,
        version=str(meta["version"]),
        description=str(meta.get("description", "")),
        capabilities=Capabilities(
            multiple_targets=caps["targets"] == "multiple",
            target_types=tuple(caps["target_types"]),
            uses_sites=caps.get("sites", "all") == "all",
        ),
        schema=meta["parameters"],
        files=dict(files),
        digest=digest,
        replies=replies,
        builtin=builtin,
    )


def load_algorithm(name: str, files: Mapping[str, bytes]) -> Algorithm:
    """Read a package and load both halves now (an upload's check): its code runs in this
    process, where a site would run its remote half in a sandbox."""
    algorithm = read_algorithm(name, files)
    algorithm.central  # noqa: B018 - loading is the point
    algorithm.remote  # noqa: B018
    return algorithm


def load_folder(folder: Path) -> Algorithm:
    """Load the package in ``folder`` (its name is the folder's name); one of ``algorithms/``
    is a built-in."""
    algorithm = read_algorithm(
        folder.name, read_folder(folder), builtin=folder.resolve().parent == BUILTIN_DIR
    )
    algorithm.central  # noqa: B018 - loading is the point
    algorithm.remote  # noqa: B018
    return algorithm


def read_folder(folder: Path) -> dict[str, bytes]:
    return {f: (folder / f).read_bytes() for f in file_names(folder.name) if (folder / f).is_file()}


def _builtin_folders() -> list[Path]:
    """The built-in algorithms' folders, by name."""
    return [
        folder
        for folder in sorted(BUILTIN_DIR.iterdir())
        if folder.is_dir() and (folder / "params.json").is_file()
    ]


@functools.cache
def _shipped() -> tuple[Algorithm, ...]:
    """The built-in algorithms, read and checked once per process. They are files of the
    installed package, which do not change under a running process any more than its Python
    modules do; an ``Algorithm`` is not changed once read, so registries may share one."""
    return tuple(
        read_algorithm(folder.name, read_folder(folder), builtin=True)
        for folder in _builtin_folders()
    )


class Registry:
    """Algorithms by name, each with its versions in the order they were added."""

    def __init__(self) -> None:
        self._versions: dict[str, dict[str, Algorithm]] = {}

    @classmethod
    def with_builtins(cls) -> Registry:
        """A new registry of the built-in algorithms (read once per process, ``_shipped``)."""
        registry = cls()
        for algorithm in _shipped():
            registry.add(algorithm)
        return registry

    @classmethod
    def builtin(cls, name: str) -> Algorithm:
        """The built-in algorithm ``name``, read alone (``fip simulate`` runs one: reading and
        checking the others would only delay it); the registry's error for an unknown name."""
        for folder in _builtin_folders():
            if folder.name == name:
                return read_algorithm(folder.name, read_folder(folder), builtin=True)
        return cls.with_builtins().get(name)

    def add(self, algorithm: Algorithm) -> None:
        versions = self._versions.setdefault(algorithm.name, {})
        known = versions.get(algorithm.version)
        if known is not None and known.digest != algorithm.digest:
            raise AlgorithmInvalid(
                f"{algorithm.name} version {algorithm.version} exists with other files; "
                "give the new files a new version in params.json"
            )
        versions[algorithm.version] = algorithm

    def all(self) -> list[Algorithm]:
        """Every version of every algorithm, by name then in the order added."""
        return [a for name in self.names() for a in self._versions[name].values()]

    def names(self) -> list[str]:
        return sorted(self._versions)

    def versions(self, name: str) -> list[Algorithm]:
        return list(self._versions.get(name, {}).values())

    def get(self, name: str, version: str | None = None) -> Algorithm:
        versions = self._versions.get(name)
        if not versions:
            raise InputError(
                f"no algorithm named '{name}'; known: {', '.join(self.names()) or 'none'}"
            )
        if version is None:
            return list(versions.values())[-1]
        if version not in versions:
            raise InputError(f"{name} has no version '{version}'; known: {', '.join(versions)}")
        return versions[version]


@functools.lru_cache(maxsize=256)
def _check_schema(schema_json: str) -> None:
    """Draft 2020-12's check of a schema (given as JSON), done once per distinct schema: it is
    most of the cost of reading a package, and central reads every version at each start."""
    Draft202012Validator.check_schema(json.loads(schema_json))


def _read_params(name: str, content: bytes) -> dict[str, Any]:
    try:
        meta = json.loads(content)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise AlgorithmInvalid(f"params.json is not valid JSON: {error}") from None
    if not isinstance(meta, dict):
        raise AlgorithmInvalid("params.json must hold a JSON object")
    for key in ("name", "version", "capabilities", "parameters"):
        if key not in meta:
            raise AlgorithmInvalid(f"params.json has no '{key}'")
    if meta["name"] != name:
        raise AlgorithmInvalid(f"params.json names '{meta['name']}', the files name '{name}'")
    caps = meta["capabilities"]
    if not isinstance(caps, dict) or caps.get("targets") not in ("single", "multiple"):
        raise AlgorithmInvalid('params.json: capabilities.targets must be "single" or "multiple"')
    types = caps.get("target_types")
    if not isinstance(types, list) or not types or not set(types) <= set(methods.names()):
        raise AlgorithmInvalid(
            "params.json: capabilities.target_types must be a non-empty list of target methods, "
            "known methods: " + ", ".join(f'"{t}"' for t in methods.names())
        )
    if caps.get("sites", "all") not in ("all", "none"):
        raise AlgorithmInvalid(
            'params.json: capabilities.sites must be "all" (the default) or "none" (central alone)'
        )
    schema = meta["parameters"]
    try:
        _check_schema(json.dumps(schema, sort_keys=True))
    except SchemaError as error:
        raise AlgorithmInvalid(
            f"params.json: parameters is not a valid JSON Schema: {error.message}"
        ) from None
    if not isinstance(schema, dict) or schema.get("type") != "object":
        raise AlgorithmInvalid('params.json: parameters must be a schema of "type": "object"')
    properties = schema.get("properties", {})
    if "imputations" not in properties:
        raise AlgorithmInvalid("params.json: parameters must define 'imputations' (M)")
    defaults = {
        k: v["default"]
        for k, v in properties.items()
        if "default" in v and v["default"] is not None
    }
    problems = list(Draft202012Validator(schema).iter_errors(defaults))
    if problems:
        raise AlgorithmInvalid(
            f"params.json: a default does not fit its schema: {problems[0].message}"
        )
    return meta


@functools.lru_cache(maxsize=256)
def _code(text: str, filename: str) -> CodeType:
    """Python's compilation of a half, done once per distinct source (code is immutable):
    central checks every version's syntax at each start."""
    return compile(text, filename, "exec", dont_inherit=True)


def _compile(name: str, file_name: str, source: bytes, digest: str) -> CodeType:
    filename = f"<{name}/{file_name} {digest[:12]}>"
    try:
        text = source.decode()
        code = _code(text, filename)
    except UnicodeDecodeError:
        raise AlgorithmInvalid(f"{file_name} is not UTF-8 text") from None
    except SyntaxError as error:
        raise AlgorithmInvalid(f"{file_name} line {error.lineno}: {error.msg}") from None
    linecache.cache[filename] = (len(text), None, text.splitlines(True), filename)
    return code


def _load_module(name: str, file_name: str, source: bytes, digest: str) -> ModuleType:
    """Execute one half in this process, as a module of its own."""
    code = _compile(name, file_name, source, digest)
    module_name = f"fip_algorithm_{digest[:16]}_{file_name.removesuffix('.py')}"
    module = ModuleType(module_name)
    module.__file__ = code.co_filename
    sys.modules[module_name] = module
    try:
        exec(code, module.__dict__)
    except Exception as error:
        del sys.modules[module_name]
        raise AlgorithmInvalid(
            f"{file_name} failed to load: {type(error).__name__}: {error}"
        ) from None
    return module


def _check_central(file_name: str, module: ModuleType) -> None:
    run = getattr(module, "run", None)
    if not inspect.iscoroutinefunction(run):
        raise AlgorithmInvalid(f"{file_name} must define 'async def run(job)'")


def _check_remote(file_name: str, module: ModuleType) -> None:
    if not callable(getattr(module, "prepare", None)):
        raise AlgorithmInvalid(f"{file_name} must define 'prepare(site)'")
    for attribute in ("HANDLERS", "LOCAL"):
        handlers = getattr(module, attribute, {})
        if not isinstance(handlers, dict) or not all(
            isinstance(k, str) and callable(v) for k, v in handlers.items()
        ):
            raise AlgorithmInvalid(
                f"{file_name}: {attribute} must map operation names to functions"
            )
    if not getattr(module, "HANDLERS", None):
        raise AlgorithmInvalid(f"{file_name} must define HANDLERS, the operations sites answer")
