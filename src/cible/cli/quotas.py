"""`cible quota set|show|request|approve|deny` and `cible cost report`."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from cible.cli.groups import new_group
from cible.cli.output import console, emit, print_table

ScopeOpt = Annotated[str, typer.Option("--scope", "-s", help="a VM family (standardDSv2Family), 'total' or 'low_priority'")]


def _quotas():  # noqa: ANN202
    from cible.sdk import MLClient

    return MLClient().quotas


def register(quota_app: typer.Typer, cost_app: typer.Typer) -> None:
    @quota_app.command("set")
    def set_quota(
        scope: ScopeOpt,
        vcpus: Annotated[Optional[int], typer.Option("--vcpus", help="the quota; omit with --unlimited")] = None,
        unlimited: Annotated[bool, typer.Option("--unlimited", help="remove the quota")] = False,
    ) -> None:
        """Set a workspace vCPU quota (an admin's command)."""
        if (vcpus is None) == (not unlimited):
            raise typer.BadParameter("give --vcpus N or --unlimited")
        result = _quotas().set(scope, None if unlimited else vcpus)
        emit(result, lambda _: console.print(f"quota {scope}: {'no limit' if unlimited else f'{vcpus} vCPUs'}",
                                             highlight=False))

    @quota_app.command("show")
    def show() -> None:
        """The quotas set and the increase requests."""
        emit(_quotas().get(), _draw_quotas)

    def _draw_quotas(data: dict) -> None:
        print_table([{"scope": k, "vcpus": v} for k, v in data["quotas"].items()], [("scope", "scope"), ("vCPUs", "vcpus")],
                    title="quotas (scopes not listed have no limit)")
        print_table(data["requests"], [("id", "id"), ("scope", "scope"), ("from", "current_vcpus"),
                                       ("to", "requested_vcpus"), ("by", "requested_by"), ("status", "status"),
                                       ("reason", "reason")], title="increase requests")

    @quota_app.command("request")
    def request(
        scope: ScopeOpt,
        vcpus: Annotated[int, typer.Option("--vcpus", help="the quota you need")],
        reason: Annotated[Optional[str], typer.Option("--reason")] = None,
    ) -> None:
        """Ask for a quota increase; an admin approves it with `cible quota approve`."""
        emit(_quotas().request(scope, vcpus, reason), lambda made: console.print(
            f"quota request {made['id']}: {scope} to {vcpus} vCPUs, pending approval", highlight=False))

    @quota_app.command("approve")
    def approve(request_id: Annotated[int, typer.Argument(help="the request's id (`cible quota show`)")]) -> None:
        """Approve a quota increase request (an admin's command): the quota becomes what was asked."""
        emit(_quotas().decide(request_id, True), lambda done: console.print(
            f"quota request {request_id} approved: {done['scope']} is {done['requested_vcpus']} vCPUs", highlight=False))

    @quota_app.command("deny")
    def deny(request_id: Annotated[int, typer.Argument(help="the request's id")]) -> None:
        """Deny a quota increase request."""
        emit(_quotas().decide(request_id, False),
             lambda _: console.print(f"quota request {request_id} denied", highlight=False))

    @cost_app.command("report")
    def report(
        by: Annotated[str, typer.Option("--by", help="compute, job or user")] = "compute",
        since: Annotated[Optional[str], typer.Option("--since", help="ISO time, e.g. 2026-11-01 or 2026-11-28T09:00Z")] = None,
    ) -> None:
        """What the nodes cost (lifetime × the size's indicative price per hour), summed by compute, job or user."""
        emit(_quotas().cost_report(by, since), lambda data: _draw_costs(data, by))

    def _draw_costs(data: dict, by: str) -> None:
        rows = [{**line, "cost": f"{line['cost']:.4f}", "idle": f"{line['idle']:.4f}",
                 "node_hours": f"{line['node_hours']:.3f}"} for line in data["lines"]]
        print_table(rows, [(by, "key"), ("cost (USD)", "cost"), ("idle (USD)", "idle"), ("node-hours", "node_hours")],
                    title=f"cost by {by} since {data['since'] or 'the start'}: {data['total']:.4f} USD ({data['note']})")


quota_app, cost_app = new_group(), new_group()
register(quota_app, cost_app)
