"""The HTTP objects a `@rawhttp` run() sees: `AMLRequest` (Flask's request API over the ASGI scope and the
body) and what it is made of (werkzeug-like `Headers`, `MultiDict`, `FileStorage`). Standard library only;
scripts reach them through cible.serving.shims' import names."""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qsl, quote

from cible.serving import codec


class Headers:
    """Case-insensitive HTTP headers, as werkzeug's: `h.get(name)`, `name in h`, `dict(h)`,
    and iterating gives `(name, value)` pairs."""

    __slots__ = ("_items",)

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: list[tuple[str, str]] = [(str(k), str(v)) for k, v in items]

    def get(self, key: str, default: Any = None, type: Any = None) -> Any:  # noqa: A002 (werkzeug's name)
        lower = key.lower()
        for name, value in self._items:
            if name.lower() == lower:
                return value if type is None else type(value)
        return default

    def getlist(self, key: str) -> list[str]:
        lower = key.lower()
        return [value for name, value in self._items if name.lower() == lower]

    def __getitem__(self, key: str) -> str:
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key) is not None

    def __setitem__(self, key: str, value: Any) -> None:
        self.remove(key)
        self._items.append((key, str(value)))

    set = __setitem__

    def add(self, key: str, value: Any) -> None:
        self._items.append((key, str(value)))

    add_header = add

    def remove(self, key: str) -> None:
        lower = key.lower()
        self._items = [(name, value) for name, value in self._items if name.lower() != lower]

    __delitem__ = remove

    def keys(self) -> list[str]:
        return [name for name, _ in self._items]

    def values(self) -> list[str]:
        return [value for _, value in self._items]

    def items(self) -> list[tuple[str, str]]:
        return list(self._items)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(list(self._items))

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"


class MultiDict:
    """werkzeug's MultiDict, the parts scripts use: `get` (first value), `getlist`, `to_dict`."""

    __slots__ = ("_lists",)

    def __init__(self, pairs: Iterable[tuple[str, Any]] = ()) -> None:
        self._lists: dict[str, list[Any]] = {}
        for key, value in pairs:
            self._lists.setdefault(key, []).append(value)

    def get(self, key: str, default: Any = None, type: Any = None) -> Any:  # noqa: A002
        values = self._lists.get(key)
        if not values:
            return default
        if type is None:
            return values[0]
        try:
            return type(values[0])
        except (ValueError, TypeError):
            return default

    def getlist(self, key: str) -> list[Any]:
        return list(self._lists.get(key, ()))

    def __getitem__(self, key: str) -> Any:
        values = self._lists.get(key)
        if not values:
            raise KeyError(key)
        return values[0]

    def __contains__(self, key: object) -> bool:
        return key in self._lists

    def __iter__(self) -> Iterator[str]:
        return iter(self._lists)

    def __len__(self) -> int:
        return len(self._lists)

    def keys(self) -> list[str]:
        return list(self._lists)

    def items(self, multi: bool = False) -> list[tuple[str, Any]]:
        if multi:
            return [(key, value) for key, values in self._lists.items() for value in values]
        return [(key, values[0]) for key, values in self._lists.items()]

    def lists(self) -> list[tuple[str, list[Any]]]:
        return [(key, list(values)) for key, values in self._lists.items()]

    def to_dict(self, flat: bool = True) -> dict[str, Any]:
        return {k: (v[0] if flat else list(v)) for k, v in self._lists.items()}

    def __repr__(self) -> str:
        return f"MultiDict({self.items(multi=True)!r})"


class FileStorage:
    """One uploaded file of a multipart body (werkzeug's FileStorage, in brief)."""

    def __init__(self, data: bytes, name: str, filename: str | None, content_type: str | None) -> None:
        self.name, self.filename, self.content_type = name, filename, content_type
        self.mimetype = (content_type or "").split(";")[0].strip().lower()
        self.stream = io.BytesIO(data)

    def read(self, size: int = -1) -> bytes:
        return self.stream.read(size)

    def save(self, dst: Any) -> None:
        data = self.stream.getvalue()
        if hasattr(dst, "write"):
            dst.write(data)
        else:
            with open(dst, "wb") as handle:
                handle.write(data)


class UnsupportedMediaType(Exception):
    """`get_json()` on a body that does not say it is JSON (Flask answers 415; a script's run() that
    lets it escape gets Azure's 500, as under Azure's server)."""


def title_case_headers(raw: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """ASGI headers as Flask shows them (WSGI environ names: `X-Ms-Request-Id`), repeated ones joined
    with ', ' as in a WSGI environ. This is also the `request_headers` dict Azure gives run()."""
    result: dict[str, str] = {}
    for name, value in raw:
        key = name.decode("latin-1").title()
        text = value.decode("latin-1")
        result[key] = f"{result[key]}, {text}" if key in result else text
    return result


class AMLRequest:
    """The request given to a `@rawhttp` run(): Flask's request API over the ASGI scope and body."""

    def __init__(self, scope: dict[str, Any], body: bytes) -> None:
        self.scope, self._body = scope, body
        self._headers: Headers | None = None
        self._json: Any = _UNSET
        self._form: tuple[MultiDict, MultiDict] | None = None

    # -- the request line
    @property
    def method(self) -> str:
        return self.scope["method"]

    @property
    def scheme(self) -> str:
        return self.scope.get("scheme", "http")

    @property
    def path(self) -> str:
        return self.scope.get("root_path", "") + self.scope["path"]

    @property
    def query_string(self) -> bytes:
        return self.scope.get("query_string", b"")

    @property
    def full_path(self) -> str:
        return f"{quote(self.path)}?{self.query_string.decode('latin-1')}"

    @property
    def host(self) -> str:
        host = self.headers.get("Host")
        if host:
            return host
        server = self.scope.get("server") or ("localhost", 80)
        return f"{server[0]}:{server[1]}"

    @property
    def host_url(self) -> str:
        return f"{self.scheme}://{self.host}/"

    url_root = host_url

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://{self.host}{quote(self.path)}"

    @property
    def url(self) -> str:
        query = self.query_string.decode("latin-1")
        return self.base_url + (f"?{query}" if query else "")

    @property
    def remote_addr(self) -> str | None:
        client = self.scope.get("client")
        return client[0] if client else None

    @property
    def args(self) -> MultiDict:
        return MultiDict(parse_qsl(self.query_string.decode("latin-1"), keep_blank_values=True))

    # -- headers
    @property
    def headers(self) -> Headers:
        if self._headers is None:
            self._headers = Headers(title_case_headers(self.scope.get("headers", ())).items())
        return self._headers

    @property
    def content_type(self) -> str | None:
        return self.headers.get("Content-Type")

    @property
    def mimetype(self) -> str:
        return (self.content_type or "").split(";")[0].strip().lower()

    @property
    def mimetype_params(self) -> dict[str, str]:
        params = {}
        for part in (self.content_type or "").split(";")[1:]:
            key, _, value = part.partition("=")
            params[key.strip().lower()] = value.strip().strip('"')
        return params

    @property
    def content_length(self) -> int | None:
        return self.headers.get("Content-Length", type=int)

    @property
    def cookies(self) -> dict[str, str]:
        cookie = SimpleCookie()
        cookie.load(self.headers.get("Cookie", ""))
        return {key: morsel.value for key, morsel in cookie.items()}

    @property
    def is_json(self) -> bool:
        mimetype = self.mimetype
        return mimetype == "application/json" or (mimetype.startswith("application/") and mimetype.endswith("+json"))

    # -- the body
    def get_data(self, cache: bool = True, as_text: bool = False, parse_form_data: bool = False) -> bytes | str:
        return self._body.decode("utf-8", "replace") if as_text else self._body

    @property
    def data(self) -> bytes:
        return self._body

    @property
    def stream(self) -> io.BytesIO:
        return io.BytesIO(self._body)

    def get_json(self, force: bool = False, silent: bool = False, cache: bool = True) -> Any:
        if cache and self._json is not _UNSET:
            return self._json
        if not (force or self.is_json):
            if silent:
                return None
            raise UnsupportedMediaType("Did not attempt to load JSON data because the request Content-Type was not "
                                       "'application/json'.")
        try:
            value = codec.loads(self._body)
        except ValueError:
            if silent:
                return None
            raise
        if cache:
            self._json = value
        return value

    @property
    def json(self) -> Any:
        return self.get_json()

    @property
    def form(self) -> MultiDict:
        return self._parse_form()[0]

    @property
    def files(self) -> MultiDict:
        return self._parse_form()[1]

    @property
    def values(self) -> MultiDict:
        return MultiDict([*self.args.items(multi=True), *self.form.items(multi=True)])

    def _parse_form(self) -> tuple[MultiDict, MultiDict]:
        if self._form is None:
            fields: list[tuple[str, Any]] = []
            files: list[tuple[str, Any]] = []
            if self.mimetype == "application/x-www-form-urlencoded":
                fields = parse_qsl(self._body.decode("utf-8", "replace"), keep_blank_values=True)
            elif self.mimetype == "multipart/form-data":
                fields, files = _parse_multipart(self.content_type or "", self._body)
            self._form = (MultiDict(fields), MultiDict(files))
        return self._form

    def __repr__(self) -> str:
        return f"<AMLRequest '{self.url}' [{self.method}]>"


_UNSET = object()


def _parse_multipart(content_type: str, body: bytes) -> tuple[list, list]:
    """A multipart/form-data body's fields and files, with the standard library's MIME parser."""
    from email import policy
    from email.parser import BytesParser

    message = BytesParser(policy=policy.HTTP).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    fields, files = [], []
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition") or ""
        payload = part.get_payload(decode=True) or b""
        filename = part.get_filename()
        if filename is None:
            charset = part.get_content_charset() or "utf-8"
            fields.append((name, payload.decode(charset, "replace")))
        else:
            files.append((name, FileStorage(payload, name, filename, part.get("Content-Type"))))
    return fields, files
