"""How the routers declare their answers.

`answers(Model)` gives a route its response model (the schema /openapi.json shows) with
`response_model_exclude_unset`, so a field the service left out is not sent as null. The routers
answer through JSONResponse explicitly (`JSON`), as before they had models: FastAPI's faster
path for models writes JSON with pydantic's encoder, whose bytes differ (float spelling);
with JSONResponse the answers stay byte for byte what they were.
"""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse

JSON = JSONResponse  # the routers' default_response_class

# A file or a stream of bytes: what the OpenAPI document says instead of a JSON schema.
BYTES = {200: {"description": "the file's bytes", "content": {"application/octet-stream": {}}}}


def answers(model: Any) -> dict[str, Any]:
    """A route decorator's arguments for answering `model`."""
    return {"response_model": model, "response_model_exclude_unset": True}
