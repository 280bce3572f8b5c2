"""What every answer shares: the order-keeping envelope base, numbers, pages and file listings."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from fastapi.encoders import jsonable_encoder
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_serializer, model_validator

# A number as the service computed it: an int stays an int, a float a float (a field typed
# `float` would turn 0 into 0.0 and change the answer's bytes).
Number = int | float
# Time stamps are ISO 8601 strings exactly as the service wrote them (never reparsed: a datetime
# field would write +00:00 as Z).
IsoTime = str

T = TypeVar("T")


class Envelope(BaseModel):
    """An answer's fields: those declared are documented (and checked), the rest pass through.

    Routes answer with `response_model_exclude_unset=True`, so a declared field the service left
    out stays out (never a `null` it did not send). Pydantic writes declared fields before the
    others; this base puts every key back where the service had it, so the JSON is the same
    as without a model. A value the service left as a Python object (a datetime, a record model)
    is read as JSON writes it, as FastAPI's encoder did before the routes had models."""

    model_config = ConfigDict(extra="allow")
    _keys: tuple[str, ...] = PrivateAttr(default=())

    @model_validator(mode="wrap")
    @classmethod
    def _remember_key_order(cls, data: Any, handler):
        if isinstance(data, BaseModel) and not isinstance(data, Envelope):
            data = jsonable_encoder(data)
        try:
            model = handler(data)
        except ValidationError:
            encoded = jsonable_encoder(data)
            if encoded == data:
                raise
            data = encoded
            model = handler(data)
        if isinstance(data, dict) and isinstance(model, Envelope):
            model._keys = tuple(data)
        return model

    @model_serializer(mode="wrap")
    def _in_key_order(self, handler):  # no return annotation: the JSON schema stays the model's
        dumped = handler(self)
        if not self._keys or not isinstance(dumped, dict):
            return dumped
        ordered = {key: dumped[key] for key in self._keys if key in dumped}
        ordered.update((key, value) for key, value in dumped.items() if key not in ordered)
        return ordered


class Page(Envelope, Generic[T]):
    """One page of a list: every list route answers it, so no answer grows with the workspace."""

    value: list[T] = Field(description="the page's items")
    count: int = Field(description="how many items the whole list has")
    next_skip: int | None = Field(None, description="pass as `skip` for the next page; null on the last page")


class FileEntry(Envelope):
    """A downloadable file: its path in the download layout and its size."""

    path: str = Field(description="where it goes in the download layout (also its URL under .../files/)")
    size: int = Field(description="its size in bytes")


FileList = Page[FileEntry]
