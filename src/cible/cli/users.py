"""`cible user create|list|show|update|delete|whoami` and `cible token create|list|revoke`."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from cible.cli.groups import new_group
from cible.cli.output import console, emit, print_fields, print_table

NameOpt = Annotated[str, typer.Option("--name", "-n", help="the user's name (a login or an e-mail address)")]
RoleOpt = Annotated[str, typer.Option(
    "--role", help="Owner, Contributor, Reader, 'AzureML Data Scientist' or 'AzureML Compute Operator' "
                   "(or owner, contributor, reader, data-scientist, compute-operator)")]
EmailOpt = Annotated[Optional[str], typer.Option(
    "--email", help="the e-mail address an OIDC sign-in finds them by (update: \"\" removes it)")]
USER_COLUMNS = [("name", "name"), ("role", "role"), ("email", "email"), ("tokens", "tokens"),
                ("added by", "created_by"),
                ("added", "created_at")]
TOKEN_COLUMNS = [("id", "id"), ("user", "user"), ("name", "name"), ("state", "state"), ("expires", "expires_at"),
                 ("last used", "last_used_at"), ("created", "created_at")]


def _client():  # noqa: ANN202
    from cible.sdk import MLClient

    return MLClient()


def register(user_app: typer.Typer, token_app: typer.Typer) -> None:
    @user_app.command("create")
    def create(name: NameOpt, role: RoleOpt, email: EmailOpt = None) -> None:
        """Add a user with a role (an Owner's command); give them a token with `cible token create --user NAME`,
        or let them sign in with `cible login` (OIDC finds them by --email)."""
        emit(_client().users.create(name, role, email), lambda user: console.print(
            f"user {user['name']}: {user['role']}", highlight=False))

    @user_app.command("list")
    def list_() -> None:
        """The workspace's users and their roles."""
        emit(_client().users.list(), lambda users: print_table(users, USER_COLUMNS))

    @user_app.command("show")
    def show(name: Annotated[Optional[str], typer.Option("--name", "-n", help="default: yourself")] = None) -> None:
        """One user (yourself without --name: your role and what it may do)."""
        users = _client().users
        emit(users.get(name) if name else users.me(), lambda user: print_fields(user, list(user)))

    @user_app.command("update")
    def update(name: NameOpt, role: Annotated[Optional[str], typer.Option("--role", help="a new role")] = None,
               email: EmailOpt = None) -> None:
        """Change a user's role or e-mail address (an Owner's command)."""
        emit(_client().users.update(name, role, email), lambda user: console.print(
            f"user {user['name']}: {user['role']}", highlight=False))

    @user_app.command("delete")
    def delete(name: NameOpt) -> None:
        """Remove a user and revoke their tokens (an Owner's command); what they made stays theirs."""
        emit(_client().users.delete(name), lambda user: console.print(f"user {user['name']} removed", highlight=False))

    @token_app.command("create")
    def create_token(
        user: Annotated[Optional[str], typer.Option("--user", "-u", help="whose token (default: yours; another "
                                                                       "user's: an Owner's command)")] = None,
        name: Annotated[str, typer.Option("--name", "-n", help="what it is for (laptop, ci …)")] = "token",
        expires_in_days: Annotated[Optional[float], typer.Option("--expires-in-days", help="default: never")] = None,
    ) -> None:
        """A personal token: printed this once (only its hash is kept). Use it as CIBLE_TOKEN."""
        emit(_client().tokens.create(user, name, expires_in_days), _draw_new_token)

    def _draw_new_token(made: dict) -> None:
        console.print(f"token {made['id']} of {made['user']} ({made['name']}"
                      f"{', expires ' + made['expires_at'] if made.get('expires_at') else ''}):", highlight=False)
        console.print(made["token"], highlight=False, markup=False, soft_wrap=True)
        console.print("it is shown this once: keep it (export CIBLE_TOKEN=…); revoke it with "
                      f"`cible token revoke {made['id']}`", highlight=False)

    @token_app.command("list")
    def list_tokens(user: Annotated[Optional[str], typer.Option("--user", "-u", help="default: yours")] = None) -> None:
        """A user's personal tokens, never their secrets."""
        emit(_client().tokens.list(user), lambda tokens: print_table(tokens, TOKEN_COLUMNS))

    @token_app.command("revoke")
    def revoke(token_id: Annotated[str, typer.Argument(help="the token's id (`cible token list`)")]) -> None:
        """Revoke a personal token: it stops working at once."""
        emit(_client().tokens.revoke(token_id), lambda token: console.print(
            f"token {token['id']} of {token['user']}: {token['state']}", highlight=False))


user_app, token_app = new_group(), new_group()
register(user_app, token_app)
