"""The REST API's answers as pydantic models: what /openapi.json says each route returns.

These are envelopes only, apart from the domain models (cible.core.models) and the store's rows:
the services still build plain dicts, and a route's response model documents and checks them.
Every envelope passes through fields it does not list and keeps the keys in the order the
service gave them, so declaring a model never changes an answer (see common.Envelope).
"""
