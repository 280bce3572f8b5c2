"""The workspace's users and personal tokens (`cible user …`, `cible token …`)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from cible.client.http import WorkspaceClient


class UserOperations:
    def __init__(self, client: WorkspaceClient) -> None:
        self._client = client

    def me(self) -> dict[str, Any]:
        """Who this client acts as, their role and its permissions."""
        return self._client.json("GET", "/users/me")

    def list(self) -> list[dict[str, Any]]:
        return self._client.items("/users")

    def get(self, name: str) -> dict[str, Any]:
        return self._client.json("GET", f"/users/{quote(name, safe='')}")

    def create(self, name: str, role: str, email: str | None = None) -> dict[str, Any]:
        return self._client.json("POST", "/users", json={"name": name, "role": role, "email": email})

    def update(self, name: str, role: str | None = None, email: str | None = None) -> dict[str, Any]:
        """Change `role` and/or `email` (\"\" removes it); None leaves either as it is."""
        return self._client.json("PATCH", f"/users/{quote(name, safe='')}", json={"role": role, "email": email})

    def delete(self, name: str) -> dict[str, Any]:
        return self._client.json("DELETE", f"/users/{quote(name, safe='')}")


class TokenOperations:
    def __init__(self, client: WorkspaceClient) -> None:
        self._client = client

    def create(self, user: str | None = None, name: str = "token", expires_in_days: float | None = None) -> dict[str, Any]:
        """A new personal token (of the caller, or of `user` for an Owner): `token` in the answer is its
        secret, shown this once."""
        return self._client.json("POST", "/tokens", json={"user": user, "name": name,
                                                          "expires_in_days": expires_in_days})

    def list(self, user: str | None = None) -> list[dict[str, Any]]:
        return self._client.items("/tokens", {"user": user} if user else None)

    def revoke(self, token_id: str) -> dict[str, Any]:
        return self._client.json("POST", f"/tokens/{quote(token_id, safe='')}:revoke")
