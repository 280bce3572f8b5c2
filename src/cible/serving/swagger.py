"""`GET /swagger.json[?version=2|2.0|3|3.0|3.1]`: the OpenAPI document Azure's server generates
(azureml-spec §7.2): its templates' paths (`/`, `/score`, `/swagger.json`), with `ServiceInput` and
`ServiceOutput` from run()'s inference-schema decorators (an empty object schema when run() is not
decorated). A user's `swagger.json` / `swagger2.json` (v2), `swagger3.json` (v3) or `swagger3.1.json`
in the app root is served instead. SERVICE_NAME, SERVICE_VERSION and SERVICE_PATH_PREFIX fill the
info and paths as on Azure.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable
from typing import Any

from cible.serving.script import schema_decorated

# version alias -> the canonical version it names
VERSIONS = {"2": "2", "2.0": "2", "3": "3", "3.0": "3", "3.1": "3.1"}
_USER_FILES = {"2": ("swagger.json", "swagger2.json"), "3": ("swagger3.json",), "3.1": ("swagger3.1.json",)}
_INFERENCE_SCHEMA_NAMES = {"2": "2.0", "3": "3.0", "3.1": "3.1"}  # what get_supported_versions() lists


class SwaggerNotFound(Exception):
    """An unknown version, or one the script's schemas cannot be written in: 404 with this message."""


class SwaggerDocuments:
    """The documents of one loaded scorer, built on first request (a reload makes a new one)."""

    def __init__(self, app_root: str, run: Callable[..., Any] | None) -> None:
        self.app_root, self.run = app_root, run
        self._built: dict[str, dict[str, Any] | None] = {}

    def get(self, version: str | None) -> dict[str, Any]:
        version = "2" if version is None else version
        canonical = VERSIONS.get(version)
        if canonical is None:
            raise SwaggerNotFound(f"Swagger version [{version}] is not valid. "
                                  f"Supported versions: [{', '.join(self.supported())}].")
        document = self._document(canonical)
        if document is None:
            raise SwaggerNotFound(f"Swagger version [{version}] is not supported for the scoring script. "
                                  f"Supported swagger versions: [{', '.join(self.supported())}].")
        return document

    def supported(self) -> list[str]:
        return [v for v in ("2", "3", "3.1") if self._document(v) is not None]

    def _document(self, version: str) -> dict[str, Any] | None:
        if version not in self._built:
            self._built[version] = self._user_document(version) or self._generate(version)
        return self._built[version]

    def _user_document(self, version: str) -> dict[str, Any] | None:
        for name in _USER_FILES[version]:
            path = os.path.join(self.app_root, name)
            if os.path.isfile(path):
                with open(path, encoding="utf-8") as handle:
                    return json.load(handle)
        return None

    def _generate(self, version: str) -> dict[str, Any] | None:
        empty = {"type": "object", "example": {}}
        input_schema, output_schema = empty, copy.deepcopy(empty)
        if self.run is not None and schema_decorated(self.run):
            from inference_schema.schema_util import get_input_schema, get_output_schema, get_supported_versions

            if _INFERENCE_SCHEMA_NAMES[version] not in get_supported_versions(self.run):
                return None
            input_schema, output_schema = get_input_schema(self.run), get_output_schema(self.run)
        return _template(version, input_schema, output_schema)


def _template(version: str, input_schema: Any, output_schema: Any) -> dict[str, Any]:
    name = os.environ.get("SERVICE_NAME", "ML service")
    prefix = os.environ.get("SERVICE_PATH_PREFIX", "").strip("/")
    prefix = f"/{prefix}" if prefix else ""
    info = {"title": name, "description": f"API specification for the Azure Machine Learning service {name}",
            "version": os.environ.get("SERVICE_VERSION", "1.0")}
    error = {"type": "object", "properties": {"message": {"type": "string"}}}
    if version == "2":
        ref = "#/definitions/"
        failed = {"description": "The service failed to execute due to an error.",
                  "schema": {"$ref": ref + "ErrorResponse"}}
        return {
            "swagger": "2.0", "info": info, "schemes": ["https"], "consumes": ["application/json"],
            "produces": ["application/json"],
            "securityDefinitions": {"Bearer": {"type": "apiKey", "name": "Authorization", "in": "header",
                                               "description": "For example: Bearer abc123"}},
            "paths": {
                f"{prefix}/": {"get": {
                    "operationId": "ServiceHealthCheck",
                    "description": "Simple health check endpoint to ensure the service is up at any given point.",
                    "responses": {"200": {"description": "If service is up and running, this response will be "
                                                         "returned with the content 'Healthy'",
                                          "schema": {"type": "string"}, "examples": {"application/json": "Healthy"}},
                                  "default": failed}}},
                f"{prefix}/score": {"post": {
                    "operationId": "RunMLService",
                    "description": "Run web service's model and get the prediction output",
                    "security": [{"Bearer": []}],
                    "parameters": [{"name": "serviceInputPayload", "in": "body",
                                    "description": "The input payload for executing the real-time machine "
                                                   "learning service.", "schema": {"$ref": ref + "ServiceInput"}}],
                    "responses": {"200": {"description": "The service processed the input correctly and provided a "
                                                         "result prediction, if applicable.",
                                          "schema": {"$ref": ref + "ServiceOutput"}},
                                  "default": failed}}},
                f"{prefix}/swagger.json": {"get": {
                    "operationId": "GetSwaggerSpec", "description": "Get the Swagger specification.",
                    "parameters": [{"name": "version", "in": "query", "required": False, "type": "integer",
                                    "enum": [2, 3]}],
                    "responses": {"200": {"description": "The Swagger specification.", "schema": {"type": "string"}},
                                  "default": failed}}},
            },
            "definitions": {"ServiceInput": input_schema, "ServiceOutput": output_schema, "ErrorResponse": error},
        }
    ref = "#/components/schemas/"
    failed = {"description": "The service failed to execute due to an error.",
              "content": {"application/json": {"schema": {"$ref": ref + "ErrorResponse"}}}}
    return {
        "openapi": "3.1.0" if version == "3.1" else "3.0.3", "info": info, "security": [{"Bearer": []}],
        "paths": {
            f"{prefix}/": {"get": {
                "operationId": "ServiceHealthCheck",
                "description": "Simple health check endpoint to ensure the service is up at any given point.",
                "responses": {"200": {"description": "If service is up and running, this response will be returned "
                                                     "with the content 'Healthy'",
                                      "content": {"text/plain": {"schema": {"type": "string", "example": "Healthy"}}}},
                              "default": failed}}},
            f"{prefix}/score": {"post": {
                "operationId": "RunMLService", "description": "Run web service's model and get the prediction output",
                "security": [{"Bearer": []}],
                "requestBody": {"description": "The input payload for executing the real-time machine learning "
                                               "service.",
                                "content": {"application/json": {"schema": {"$ref": ref + "ServiceInput"}}}},
                "responses": {"200": {"description": "The service processed the input correctly and provided a result "
                                                     "prediction, if applicable.",
                                      "content": {"application/json": {"schema": {"$ref": ref + "ServiceOutput"}}}},
                              "default": failed}}},
            f"{prefix}/swagger.json": {"get": {
                "operationId": "GetSwaggerSpec", "description": "Get the Swagger specification.",
                "parameters": [{"name": "version", "in": "query", "required": False,
                                "schema": {"type": "integer", "enum": [2, 3]}}],
                "responses": {"200": {"description": "The Swagger specification.",
                                      "content": {"text/plain": {"schema": {"type": "string"}}}},
                              "default": failed}}},
        },
        "components": {
            "schemas": {"ServiceInput": input_schema, "ServiceOutput": output_schema, "ErrorResponse": error},
            "securitySchemes": {"Bearer": {"type": "apiKey", "name": "Authorization", "in": "header",
                                           "description": "For example: Bearer abc123"}},
        },
    }
