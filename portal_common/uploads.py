"""Request bodies in memory only, with a size limit checked as the bytes arrive.

Starlette's ``request.form()`` (and FastAPI's ``UploadFile``) spool any part over 1 MiB to a
temporary file: a dataset on disk. Both portals read their forms here instead:

- :class:`BodyLimit`, an ASGI middleware, counts every request body as it is received and
  answers 413 as soon as it crosses the limit, without reading the rest. Its limit is small
  (every form, algorithm files included); a route that takes data raises it for itself with
  :func:`allow_body` (a dependency that runs before the body is read), and a body whose
  Content-Length is over the limit is refused before its first byte is read.
- :class:`MultipartStream` parses ``multipart/form-data`` with python-multipart's streaming
  parser into fields and file chunks, in memory. :func:`read_form` collects a whole form;
  :meth:`MultipartStream.field_before_files` reads only up to a field (the CSRF token) so that
  it is checked before any file is buffered; :func:`file_part` gives a file's chunks as they
  arrive, for a route that parses a CSV as it streams in (``federation.data.read_csv_chunks``)
  instead of holding it.

Routes that take uploads declare no ``File``/``Form`` parameters, so FastAPI reads nothing
before their dependencies (authentication, CSRF) have run.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MIB = 1 << 20
DATA_LIMIT = 1_000_000_000
"""Default limit of a data upload (a CSV): 1 GB."""
FORM_LIMIT = MIB
"""Default limit of every other body (forms, algorithm files): 1 MiB."""
FIELD_LIMIT = 64 << 10
"""Largest text field of a multipart form (file parts are limited by the body's limit only)."""

_LIMIT_KEY = "fip.body_limit"
_STREAM_KEY = "fip.multipart"


def size_text(size: int) -> str:
    """A byte count as people write it: 1 GB, 1 MiB, 64 KiB, 500 bytes."""
    for unit, name in ((10**9, "GB"), (10**6, "MB"), (1 << 30, "GiB"), (MIB, "MiB"), (1024, "KiB")):
        if size >= unit and size % unit == 0:
            return f"{size // unit} {name}"
    return f"{size} bytes"


@dataclass
class _Limit:
    """One request's body limit and how much of its body was received."""

    limit: int
    setting: str
    declared: int | None
    received: int = 0
    exceeded: bool = False
    counted: bool = False
    """The middleware counts the bytes; a reader without it counts them itself."""

    def message(self) -> str:
        return (
            f"the request body is larger than the limit of {size_text(self.limit)} "
            f"({self.limit} bytes); the setting {self.setting} raises it"
        )

    def check_declared(self) -> None:
        if self.declared is not None and self.declared > self.limit:
            raise self.too_large()

    def add(self, size: int) -> None:
        self.received += size
        if self.received > self.limit:
            raise self.too_large()

    def too_large(self) -> BodyTooLarge:
        self.exceeded = True
        return BodyTooLarge(self.message())


class BodyTooLarge(HTTPException):
    """A body over its limit (413); the message names the limit and its setting."""

    def __init__(self, message: str) -> None:
        super().__init__(status_code=413, detail=message)


def _declared(scope: Scope) -> int | None:
    try:
        return int(Headers(scope=scope)["content-length"])
    except (KeyError, ValueError):
        return None


class BodyLimit:
    """ASGI middleware: every HTTP request body counted as it arrives, 413 when over its limit.

    ``limit`` applies to every request unless its route raises it with :func:`allow_body`.
    Once a body is over, whatever the application was answering is dropped for the 413.
    """

    def __init__(self, app: ASGIApp, *, limit: int, setting: str) -> None:
        self.app = app
        self.limit = limit
        self.setting = setting

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = _Limit(self.limit, self.setting, declared=_declared(scope), counted=True)
        scope[_LIMIT_KEY] = state
        started = False

        async def limited() -> Message:
            if state.exceeded:
                return {"type": "http.disconnect"}
            state.check_declared()
            message = await receive()
            if message["type"] == "http.request":
                state.add(len(message.get("body", b"")))
            return message

        async def guarded(message: Message) -> None:
            nonlocal started
            if state.exceeded and not started:
                return  # the 413 goes instead
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited, guarded)
        except Exception:
            if not state.exceeded or started:
                raise
        if state.exceeded and not started:
            response = JSONResponse({"detail": state.message()}, status_code=413)
            await response(scope, receive, send)


def _limit_of(request: Request) -> _Limit:
    state = request.scope.get(_LIMIT_KEY)
    if not isinstance(state, _Limit):
        state = _Limit(FORM_LIMIT, "the portal's form limit", declared=_declared(request.scope))
        request.scope[_LIMIT_KEY] = state
    return state


def allow_body(request: Request, limit: int, setting: str) -> None:
    """Let this request's body be up to ``limit`` bytes (``setting`` is named when it is over).

    Call it before the body is read. Nothing is read or refused here, so that authentication
    answers first; a Content-Length over the limit is refused before the first byte is read.
    """
    state = _limit_of(request)
    state.limit, state.setting = limit, setting


async def body_chunks(request: Request) -> AsyncIterator[bytes]:
    """The request's body as it arrives, within its limit; nothing is kept."""
    state = _limit_of(request)
    state.check_declared()
    async for chunk in request.stream():
        if not state.counted:
            state.add(len(chunk))
        if chunk:
            yield chunk


# ------------------------------------------------------------------ multipart


@dataclass(frozen=True)
class Field:
    name: str
    value: str


@dataclass(frozen=True)
class FileStart:
    name: str
    filename: str


@dataclass(frozen=True)
class FileData:
    data: bytes


@dataclass(frozen=True)
class FileEnd:
    name: str


Event = Field | FileStart | FileData | FileEnd


@dataclass
class UploadedFile:
    """A file part, whole in memory. ``content`` is a bytearray: no copy to assemble it."""

    filename: str
    content: bytearray


@dataclass
class Form:
    """A multipart form in memory: every value of each text field, and its files by name."""

    fields: dict[str, list[str]] = field(default_factory=dict)
    files: dict[str, UploadedFile] = field(default_factory=dict)

    def text(self, name: str) -> str:
        """The field's last value, or "" if the form has none."""
        values = self.fields.get(name)
        return values[-1] if values else ""

    def values(self, name: str) -> list[str]:
        return self.fields.get(name, [])

    def items(self) -> list[tuple[str, str]]:
        """Every text field with its last value."""
        return [(name, values[-1]) for name, values in self.fields.items() if values]

    def file(self, name: str) -> UploadedFile | None:
        """The named file part, if it was sent with a file chosen (browsers send an empty
        part with no filename when none is)."""
        upload = self.files.get(name)
        return upload if upload is not None and upload.filename else None


class MultipartStream:
    """A ``multipart/form-data`` body parsed as it arrives, into :data:`Event` s, in memory."""

    def __init__(self, request: Request) -> None:
        kind, options = parse_options_header(request.headers.get("content-type", ""))
        boundary = options.get(b"boundary")
        if kind != b"multipart/form-data" or not boundary:
            raise HTTPException(
                status_code=400, detail="expected a multipart/form-data body (a form with files)"
            )
        self._chunks = body_chunks(request)
        self._events: deque[Event] = deque()
        self._replay: deque[Event] = deque()
        self._ended = False
        self._exhausted = False
        self._error: HTTPException | None = None
        self._headers: dict[bytes, bytes] = {}
        self._header_name = bytearray()
        self._header_value = bytearray()
        self._part: FileStart | str | None = None
        self._text = bytearray()
        self._parser = MultipartParser(
            boundary,
            {
                "on_part_begin": self._on_part_begin,
                "on_header_field": self._on_header_field,
                "on_header_value": self._on_header_value,
                "on_header_end": self._on_header_end,
                "on_headers_finished": self._on_headers_finished,
                "on_part_data": self._on_part_data,
                "on_part_end": self._on_part_end,
                "on_end": self._on_end,
            },
        )

    @classmethod
    def of(cls, request: Request) -> MultipartStream:
        """The request's stream: the one a dependency began reading (CSRF), or a new one."""
        stream = request.scope.get(_STREAM_KEY)
        if not isinstance(stream, MultipartStream):
            stream = cls(request)
            request.scope[_STREAM_KEY] = stream
        return stream

    async def next(self) -> Event | None:
        """The next event, or None at the end of the body."""
        if self._replay:
            return self._replay.popleft()
        while not self._events:
            if self._exhausted:
                return None
            try:
                chunk = await anext(self._chunks)
            except StopAsyncIteration:
                self._exhausted = True
                if not self._ended:
                    raise HTTPException(
                        status_code=400, detail="the form's body ended before its last part"
                    ) from None
                continue
            try:
                self._parser.write(chunk)
            except MultipartParseError:
                raise HTTPException(
                    status_code=400, detail="the body is not a well-formed multipart form"
                ) from None
            if self._error is not None:
                raise self._error
        return self._events.popleft()

    async def events(self) -> AsyncIterator[Event]:
        while (event := await self.next()) is not None:
            yield event

    async def field_before_files(self, name: str) -> str | None:
        """The text field ``name`` if it comes before any file part; None if a file comes
        first or the form has no such field. Only the parts before it are read; they are
        given again by :meth:`next`, so the route sees the whole form."""
        seen: list[Event] = []
        found: str | None = None
        while (event := await self.next()) is not None:
            seen.append(event)
            if isinstance(event, FileStart):
                break
            if isinstance(event, Field) and event.name == name:
                found = event.value
                break
        self._replay.extendleft(reversed(seen))
        return found

    # python-multipart's callbacks

    def _on_part_begin(self) -> None:
        self._headers = {}
        self._part = None

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _on_header_end(self) -> None:
        self._headers[bytes(self._header_name).lower()] = bytes(self._header_value)
        self._header_name.clear()
        self._header_value.clear()

    def _on_headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = options.get(b"name", b"").decode("utf-8", errors="replace")
        filename = options.get(b"filename")
        if filename is None:
            self._part = name
            self._text = bytearray()
        else:
            self._part = FileStart(name=name, filename=filename.decode("utf-8", errors="replace"))
            self._events.append(self._part)

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        if isinstance(self._part, FileStart):
            if end > start:
                self._events.append(FileData(bytes(data[start:end])))
        elif isinstance(self._part, str):
            self._text += data[start:end]
            if len(self._text) > FIELD_LIMIT and self._error is None:
                self._error = HTTPException(
                    status_code=413,
                    detail=f"the form field '{self._part}' is larger than {size_text(FIELD_LIMIT)}",
                )

    def _on_part_end(self) -> None:
        if isinstance(self._part, FileStart):
            self._events.append(FileEnd(self._part.name))
        elif isinstance(self._part, str):
            self._events.append(Field(self._part, self._text.decode("utf-8", errors="replace")))
        self._part = None

    def _on_end(self) -> None:
        self._ended = True


async def read_form(request: Request) -> Form:
    """A whole multipart form in memory: its text fields and its files (the last of a name)."""
    form = Form()
    current: UploadedFile | None = None
    async for event in MultipartStream.of(request).events():
        if isinstance(event, Field):
            form.fields.setdefault(event.name, []).append(event.value)
        elif isinstance(event, FileStart):
            current = UploadedFile(filename=event.filename, content=bytearray())
            form.files[event.name] = current
        elif isinstance(event, FileData) and current is not None:
            current.content += event.data
        else:
            current = None
    return form


@dataclass(frozen=True)
class FilePart:
    """A file part of a form as it arrives: its name and its bytes, chunk by chunk."""

    filename: str
    chunks: AsyncGenerator[bytes, None]


@asynccontextmanager
async def file_part(request: Request, name: str) -> AsyncIterator[FilePart | None]:
    """The form's file part ``name`` (with a file chosen) to read as it arrives, nothing of it
    kept but what its reader keeps; None when the form has none. Parts before it are dropped.

    On leaving, the rest of the body is read and dropped, so that a client still sending gets
    the answer: an error found early in a large file (raised in the block) is answered once
    the body has arrived, without holding it.
    """
    stream = MultipartStream.of(request)
    found: FilePart | None = None
    while found is None and (event := await stream.next()) is not None:
        if isinstance(event, FileStart) and event.name == name and event.filename:
            found = FilePart(filename=event.filename, chunks=_file_data(stream))
    try:
        yield found
    except Exception:
        with suppress(HTTPException, ClientDisconnect):  # the body's own error: the first one
            await _drain(stream, found)
        raise
    await _drain(stream, found)


async def _file_data(stream: MultipartStream) -> AsyncGenerator[bytes, None]:
    while isinstance(event := await stream.next(), FileData):
        yield event.data


async def _drain(stream: MultipartStream, part: FilePart | None) -> None:
    if part is not None:
        await part.chunks.aclose()
    while await stream.next() is not None:
        pass


async def form_of(request: Request) -> Form:
    """Any form body in memory: multipart through :func:`read_form`, url-encoded (small, never
    spooled) through Starlette; another body is an empty form."""
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        return await read_form(request)
    form = Form()
    if content_type.startswith("application/x-www-form-urlencoded"):
        state = _limit_of(request)
        state.check_declared()
        for name, value in (await request.form()).multi_items():
            if isinstance(value, str):
                form.fields.setdefault(name, []).append(value)
    return form


def multipart_schema(**files: str) -> dict[str, Any]:
    """``openapi_extra`` for a route that reads its multipart body itself: the file fields
    (name: description) that /docs shows, as FastAPI would for ``File()`` parameters."""
    properties = {
        name: {"type": "string", "format": "binary", "description": description}
        for name, description in files.items()
    }
    schema = {"type": "object", "required": list(files), "properties": properties}
    return {
        "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}
    }
