"""An error's message reaches the terminal as text: brackets in it (`cible[kubernetes]`, `[a, b]`) are not
taken for rich markup and dropped."""

from __future__ import annotations

import sys

import pytest

from cible.cli import main as cli_main
from cible.core.errors import InvalidRequestError


def test_a_message_with_brackets_is_printed_whole(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    def refuse(**_: object) -> None:
        raise InvalidRequestError("type: the kubernetes node provider is unavailable (pip install 'cible[kubernetes]'); "
                                  "[bold]not markup[/bold]")

    monkeypatch.setattr(cli_main, "app", refuse)
    monkeypatch.setattr(sys, "argv", ["cible", "compute", "attach"])
    with pytest.raises(SystemExit) as ended:
        cli_main.main()
    assert ended.value.code == 1
    said = capsys.readouterr().err
    assert "pip install 'cible[kubernetes]'" in said and "[bold]not markup[/bold]" in said
