"""The ranks of a node started together in one child (the sandbox path of cible.launch.ranks): their
exits are this process's to read, however fast they end."""

from __future__ import annotations

import os
from pathlib import Path

from cible.launch.ranks import Ranks


def test_ranks_that_end_at_once_still_report_their_exit(tmp_path: Path):
    # A rank that ended before the starting child let go of it was reaped there (a collected Popen
    # polls its process) and read here as -1: seen on Slurm nodes, where the sandbox can be entered.
    for attempt in range(20):
        ranks = Ranks("bash", "exit $RANK", tmp_path, {"PATH": os.environ["PATH"]},
                      [(0, {"RANK": "0"}), (1, {"RANK": "0"})] if attempt % 2 else [(0, {"RANK": "0"})],
                      tmp_path, enter=lambda: None)
        assert ranks.wait(None, lambda: False) == (None, None), [r.proc.returncode for r in ranks.ranks]
        assert [r.proc.returncode for r in ranks.ranks] == [0] * len(ranks.ranks)


def test_a_fast_failing_rank_reports_its_own_code(tmp_path: Path):
    ranks = Ranks("bash", "exit 3", tmp_path, {"PATH": os.environ["PATH"]}, [(0, {})], tmp_path, enter=lambda: None)
    stopped, failed = ranks.wait(None, lambda: False)
    assert stopped is None and failed is not None and failed.proc.returncode == 3
