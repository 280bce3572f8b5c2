"""The node agent: the one process cible runs on every node it owns.

It pulls, never listens: a long-polled heartbeat to the workspace server returns at
once when the server has something for the node (a job to start, a cancel, a job to
drop, stop) and otherwise after `wait_s`, so an idle node starts work the moment it
is assigned without polling on an interval. The jobs themselves run through the same
launcher as everywhere (`python -m cible.launch`, forked by a warm fork server), each launcher
held to the node's size by `NodeLimits`. A watcher ships the run's log and artifact
files to the server as they grow and reports each status change, woken by the launchers
(a byte in a pipe at each status) or every WATCH_INTERVAL_S; the final report goes only
after every file is shipped, so a job the server sees ended is complete.

Losing the server is survivable: runs go on, heartbeats retry (re-reading the
server's URL from its URL file or the workspace), and reports are sent again once it answers. An
agent that cannot reach its server for `orphan_after_s` ends its runs and exits.
"""

from __future__ import annotations

import json
import logging
import os
import select
import shutil
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cible.agent.http import AgentHttp, HTTPStatusError, Response, TransportError
from cible.agent.presence import Presence
from cible.agent.shipping import inline_all, pending_files, ship_file
from cible.agent.staged import StagedFiles, needs_transfer
from cible.agent.transfer import TransferError, describe_error
from cible.agent.warm import WarmStart, start_launchers
from cible.core.lifecycle.runs import RunObservation
from cible.node import gpus
from cible.node.files import SELF_STOP_FILE
from cible.node.limits import NodeLimits, preexec_for
from cible.node.runner import LocalProcessRunner

log = logging.getLogger("cible.agent")
WATCH_INTERVAL_S = 0.05
# A run's first report waits until it has run this long (or ended): a short job's statuses and files
# then reach the server in one request, its last, instead of one per status. Each request also
# wakes the server's job reconciler for a pass; on a busy cluster those are what a job costs.
SETTLE_S = 0.25
PRESENCE_WAIT_S = 2.0
FIRST_WAIT_S = 10.0  # the first heartbeat's long-poll, before the server has said its own


@dataclass
class Run:
    job: str
    attempt: int
    node_rank: int
    handle: dict[str, Any] | None  # None while its files are fetched (a node without the workspace)
    oom_before: int
    staged: StagedFiles | None = None  # a node without the workspace: the run's files move over HTTP
    failed: dict[str, Any] | None = None  # an error of the agent's own (fetching or publishing files)
    published: bool = False  # its outputs were sent (or failed to be, saying so) after its end
    canceling: bool = False
    aborted: bool = False  # the server no longer wants it: stop it and report nothing
    preparing: bool = False  # its files are being fetched (its run folder is cleaned up once that ended)
    shipped: dict[str, int] = field(default_factory=dict)  # artifact path → bytes sent
    last_report: dict[str, Any] | None = None
    started_at: float = field(default_factory=time.monotonic)  # when this agent took it

    @property
    def key(self) -> tuple[str, int]:
        return (self.job, self.attempt)


class ServerGone(Exception):
    """The server did not answer (down, restarting, unreachable)."""


class ServerBusy(ServerGone):
    """The server answered but could not take the call now: a 5xx (its store busy or unavailable),
    or a heartbeat's 409 (a write that met another). Sent again shortly; never a reason to stop."""


class RunStopped(Exception):
    """Raised into a run's fetch when the run was canceled or dropped meanwhile: it stops there."""


class Agent:
    def __init__(self, *, node_id: str, root: Path, url: str, token: str, limits: NodeLimits,
                 home: Path | None = None, orphan_after_s: float = 600.0, presence: Presence | None = None,
                 address: str | None = None, url_file: Path | None = None, gpu_ids: list[str] | None = None) -> None:
        self.node_id = node_id
        # The GPUs the provider gave the node (cible.node.gpus); None: those it inherited (a Ray actor's).
        # Each launch plan carries the variables that show them, as a warm agent's launchers were started
        # before the node, and so its GPUs, were known.
        self.gpu_ids = gpu_ids
        self.node_env = gpus.visible_env(gpu_ids) if gpu_ids is not None else {}
        self.root = root
        self.url = url
        self.token = token
        self.home = home
        self.url_file = url_file  # where the server's URL is kept when it may move (an SSH tunnel's port)
        self.limits = limits
        self.orphan_after_s = orphan_after_s
        self.presence = presence  # compute instances: sessions, disk, idle shutdown on its own
        self.address = address  # where other nodes reach this one, when its provider knows better than the server
        self.runner: LocalProcessRunner | None = None  # made once the node's limits exist
        self.news: int | None = None  # the read end of the launchers' wake pipe (serve())
        self.runs: dict[tuple[str, int], Run] = {}
        self.done: set[tuple[str, int]] = set()
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.http = AgentHttp(timeout=30.0)
        self.cache_root: Path | None = None  # blob and environment caches kept elsewhere than root (pilots)

    # -- the server ------------------------------------------------------------
    def _call(self, method: str, path: str, *, timeout: float = 30.0, **kwargs: Any) -> Response:
        try:
            response = self.http.request(method, f"{self.url}/api/v1/agent/nodes/{self.node_id}{path}",
                                         headers={"Authorization": f"Bearer {self.token}"}, timeout=timeout, **kwargs)
        except TransportError as exc:
            self._rediscover()
            raise ServerGone(str(exc)) from None
        if response.status_code >= 500:
            raise ServerBusy(f"{response.status_code}: {response.text[:200]}")
        return response

    def _rediscover(self) -> None:
        """A restarted server may listen elsewhere: the URL file says where (its provider rewrites it,
        as when an SSH tunnel moves to another port), else the workspace's server.json."""
        try:
            if self.url_file is not None:
                self.url = read_url_file(self.url_file)
            elif self.home is not None:
                self.url = json.loads((self.home / "server.json").read_text())["url"]
        except (OSError, ValueError, KeyError, TypeError):
            pass  # being rewritten, or gone: the next failure reads it again

    # -- the main loop -----------------------------------------------------------
    def serve(self, warm: WarmStart | None = None) -> int:
        """Run the node until told to stop. `warm`: what a warm agent started before it knew its node
        (cible.agent.warm): its launchers are put under the node's limits here."""
        self.limits.create()
        if warm is None:
            self.news, self.runner = start_launchers(self.root / "runs", self.limits)
        else:
            self.news, self.runner = warm.news, warm.runner
            self.runner.adopt(self.root / "runs", preexec_for(self.limits), self.limits.add)
            self.runner.prepare()  # should its fork server have died while it waited
        threading.Thread(target=self._watch, name="watch", daemon=True).start()
        signal.signal(signal.SIGTERM, self.on_sigterm)
        try:
            return self._heartbeats()
        finally:
            self.shutdown()

    def on_sigterm(self, *_: object) -> None:
        self.stopping.set()

    def _heartbeats(self) -> int:
        """Heartbeat until the server says stop (0), no longer knows the node (0), or is gone for
        `orphan_after_s` (1). A server that answers but cannot take a heartbeat now is asked again."""
        last_contact = time.monotonic()
        backoff = 0.05
        # The first heartbeat makes the node idle, and waits there too: a job waiting for the node
        # (a serverless job, a scale-up) is assigned by the pass that heartbeat wakes, and comes in
        # its reply rather than in the next one. The server caps the wait at its own.
        wait_s = PRESENCE_WAIT_S if self.presence else FIRST_WAIT_S
        refused = None  # the last refusal logged, so that a long one is logged once
        while not self.stopping.is_set():
            try:
                reply = self._heartbeat(wait_s)
            except ServerBusy as exc:
                if str(exc) != refused:
                    log.warning("the server did not take a heartbeat (%s); sent again shortly", exc)
                    refused = str(exc)
                last_contact = time.monotonic()  # it answered: the node is not cut off
                self.stopping.wait(backoff)
                backoff = min(backoff * 2, 1.0)
                continue
            except ServerGone as exc:
                alone = self.presence.should_stop_alone(self._busy()) if self.presence else None
                if alone:
                    log.warning("%s", alone)
                    (self.root / SELF_STOP_FILE).write_text(alone + "\n")
                    return 0
                if time.monotonic() - last_contact > self.orphan_after_s:
                    log.error("no server for %.0f s (%s); the node stops", self.orphan_after_s, exc)
                    return 1
                self.stopping.wait(backoff)
                backoff = min(backoff * 2, 1.0)
                continue
            last_contact, backoff, refused = time.monotonic(), 0.05, None
            if reply is None:  # the server does not know this node (removed): nothing left to do
                return 0
            self._apply(reply)
            if self.presence:
                self.presence.told(reply)
            if reply.get("stop"):
                return 0
            wait_s = float(reply.get("wait_s", 10.0))
            if self.presence:  # an instance's sessions count for idleness: report them within seconds
                wait_s = min(wait_s, PRESENCE_WAIT_S)
        return 0

    def _heartbeat_body(self, wait_s: float) -> dict[str, Any]:
        with self.lock:
            runs = [{"job": r.job, "attempt": r.attempt, "canceling": r.canceling}
                    for r in self.runs.values() if not r.aborted]
        usage = _usage(self.limits, self.gpu_ids)
        body = {"runs": runs, "wait_s": wait_s, "usage": usage}
        if self.address:
            body["address"] = self.address
        if self.presence:
            body.update(self.presence.report(busy=bool(runs), gpus_busy=gpus.busy(usage.get("gpus", []))))
        return body

    def _heartbeat(self, wait_s: float) -> dict[str, Any] | None:
        body = self._heartbeat_body(wait_s)
        response = self._call("POST", "/heartbeat", json=body, timeout=wait_s + 30)
        if response.status_code == 404:
            return None
        if response.status_code == 409:  # met another write of the node: nothing was lost, send it again
            raise ServerBusy(f"409: {response.text[:200]}")
        response.raise_for_status()
        return response.json()

    def _busy(self) -> bool:
        with self.lock:
            return any(not r.aborted for r in self.runs.values())

    def _apply(self, reply: dict[str, Any]) -> None:
        """Start, cancel and drop runs as the reply says. A run's flags are set, and its handle read,
        under the lock: a run whose files are fetched either is started already (its handle is read
        here and canceled) or sees the flag before it starts (_launch). The launchers are told
        outside the lock."""
        wanted = {(r["job"], r["attempt"]): r for r in reply.get("runs", [])}
        to_cancel: list[dict[str, Any] | None] = []
        with self.lock:
            for key, run in list(self.runs.items()):
                if key not in wanted and not run.aborted:
                    run.aborted = True  # requeued elsewhere, failed on another node, or stop
                    to_cancel.append(run.handle)
        for key, item in wanted.items():
            with self.lock:
                run = self.runs.get(key)
            if run is None and key not in self.done and item.get("plan"):
                run = self._start(item)
            if run is not None and item.get("cancel"):
                with self.lock:
                    if not run.canceling:
                        run.canceling = True
                        to_cancel.append(run.handle)
        for handle in to_cancel:
            if handle is not None:  # else still fetching its files: it will not start (see _launch)
                self.runner.cancel(handle)

    def _cancel(self, run: Run) -> None:
        """Stop the run's launcher, if it started (never called holding the lock)."""
        with self.lock:
            handle = run.handle
        if handle is not None:
            self.runner.cancel(handle)

    def _drop(self, run: Run) -> None:
        """The server moved on from the run: stop it, report nothing more."""
        with self.lock:
            run.aborted = True
        self._cancel(run)

    def _start(self, item: dict[str, Any]) -> Run:
        oom_before = self.limits.oom_count()
        key = f"{item['job']}.{item['attempt']}"
        if not needs_transfer(item["plan"]):
            handle = self.runner.submit(key, self._on_this_node(item["plan"]))
            run = Run(item["job"], item["attempt"], item["node_rank"], handle, oom_before)
            with self.lock:
                self.runs[run.key] = run
            return run
        run = Run(item["job"], item["attempt"], item["node_rank"], None, oom_before, preparing=True)
        with self.lock:
            self.runs[run.key] = run
        threading.Thread(target=self._prepare, args=(run, key, item["plan"]), name=f"fetch-{run.job}",
                         daemon=True).start()
        return run

    def _on_this_node(self, plan: dict[str, Any]) -> dict[str, Any]:
        """The plan its launcher gets: with the variables that show it the node's GPUs (and no other)."""
        return {**plan, "node_env": self.node_env} if self.node_env else plan

    def _prepare(self, run: Run, key: str, plan: dict[str, Any]) -> None:
        """Fetch a run's files, then start its launcher on the plan made this node's. Whatever goes
        wrong ends the run, saying why: it never stays Preparing, holding the node."""
        try:
            if self._fetch(run, key, plan):
                self._launch(run, key)
        finally:
            run.preparing = False  # last: the watcher ends the run (and removes its folder) once it reads this

    def _fetch(self, run: Run, key: str, plan: dict[str, Any]) -> bool:
        """The run's files fetched; False when it ends here (failed, canceled or dropped, as it says)."""
        try:
            if not self._report_preparing(run):
                return False
            run.staged = StagedFiles(plan, node_root=self.root, run_dir=self.root / "runs" / key,
                                     node_id=self.node_id, url=lambda: self.url, token=self.token,
                                     retry_for_s=self.orphan_after_s, cache_root=self.cache_root)
            run.staged.fetch(on_progress=lambda route, done: self._stop_if_unwanted(run))
            return True
        except RunStopped:
            return True  # _launch sees why, under the lock
        except TransferError as exc:
            if exc.gone:
                self._drop(run)
            else:
                self._fail(run, "FilesNotFetched", f"could not fetch the job's files from the server: "
                                                             f"{exc.message}")
        except Exception as exc:  # a folder that cannot be made, a plan it cannot read…
            log.exception("preparing %s failed", run.job)
            self._fail(run, "FilesNotFetched", f"could not prepare the job's files: {describe_error(exc)}")
        return False

    def _launch(self, run: Run, key: str) -> None:
        """Start the run's launcher, unless it was canceled or dropped meanwhile: checked under the lock,
        where _apply sets those flags, so a cancel is never lost between the check and the start."""
        try:
            with self.lock:
                if run.aborted:
                    return
                if run.canceling:
                    run.failed = {"code": "Canceled", "message": "canceled before it started"}
                    return
                run.handle = self.runner.submit(key, self._on_this_node(run.staged.plan))
        except Exception as exc:
            log.exception("starting %s failed", run.job)
            self._fail(run, "LauncherNotStarted", f"could not start the job's launcher: {describe_error(exc)}")

    def _report_preparing(self, run: Run) -> bool:
        """Say the run is Preparing (informative only: the launcher's own reports follow); False when
        the server moved on from it."""
        try:
            return self._send_report(run, {"attempt": run.attempt, "node_rank": run.node_rank,
                                           "history": ["Preparing"], "error": None, "exit_code": None,
                                           "ended": False})
        except ServerGone:
            return True
        except HTTPStatusError as exc:
            log.warning("run %s: the server refused its Preparing report: %s", run.job, exc)
            return True

    def _stop_if_unwanted(self, run: Run) -> None:
        """Called as a run's files come: a run canceled or dropped meanwhile stops fetching them."""
        if run.aborted or run.canceling:
            raise RunStopped(run.job)

    def _fail(self, run: Run, code: str, what: str) -> None:
        """The run fails for an error of the agent's own (said in its final report)."""
        run.failed = {"code": code, "message": f"node {self.node_id} {what}"}

    # -- watching runs -------------------------------------------------------------
    def _watch(self) -> None:
        while not self.stopping.is_set():
            with self.lock:
                runs = list(self.runs.values())
            for run in runs:
                try:
                    self._watch_run(run)
                except ServerGone:
                    pass  # sent again on the next pass
                except Exception:  # one run's trouble must not stop the others being watched
                    log.exception("watching %s failed", run.job)
            self._wait_for_news()

    def _wait_for_news(self) -> None:
        """Until a launcher's state changes (a byte in the pipe), or WATCH_INTERVAL_S (a file grew, a
        launcher died without a word, the agent stops)."""
        if self.news is None:
            self.stopping.wait(WATCH_INTERVAL_S)
            return
        readable, _, _ = select.select([self.news], [], [], WATCH_INTERVAL_S)
        if readable:
            try:
                os.read(self.news, 4096)  # every byte so far: one pass reads every run's news
            except BlockingIOError:
                pass

    def _watch_run(self, run: Run) -> None:
        if run.handle is None:  # its files are being fetched, or could not be
            self._watch_unstarted(run)
            return
        observation = self.runner.poll(run.handle)
        ended = observation.ended or not observation.alive
        if run.aborted:
            if ended:
                with self.lock:
                    self.runs.pop(run.key, None)
                    self.done.add(run.key)
                # Nothing of it is wanted any more: a long-lived node keeps no run folders (staged inputs).
                shutil.rmtree(run.handle["run_dir"], ignore_errors=True)
            return
        if not ended and run.last_report is None and time.monotonic() - run.started_at < SETTLE_S:
            return  # watched again within WATCH_INTERVAL_S
        if run.staged is not None and not ended:
            run.staged.sync_if_due()  # none once it ended: the publish sends the resume folder last
        if ended and run.staged is not None and not run.published:
            self._publish(run)
            if run.aborted:  # the server moved on from it meanwhile: ended on the next pass
                return
        files = self._ship(run, everything=ended, inline=ended)
        report = self._report_of(run, observation, ended)
        if files:
            report["files"] = files
        if not self._send_report(run, report):
            return
        for item in files:
            run.shipped[item["path"]] = item["offset"] + item["size"]
        if ended:
            with self.lock:
                self.runs.pop(run.key, None)
                self.done.add(run.key)
            # Everything it made is on the server now; a long-lived node keeps no run folders.
            shutil.rmtree(run.handle["run_dir"], ignore_errors=True)

    def _send_report(self, run: Run, report: dict[str, Any]) -> bool:
        """Send the report unless it was sent already; False when the server moved on from this attempt."""
        if report == run.last_report:
            return True
        response = self._call("POST", f"/runs/{run.job}/report", json=report)
        if response.status_code in (404, 409):  # the server moved on from this attempt
            self._drop(run)
            return False
        response.raise_for_status()
        run.last_report = report
        return True

    def _watch_unstarted(self, run: Run) -> None:
        """A run not started: fetching its files still, or it ends here (they could not be fetched,
        or it was canceled or dropped meanwhile) once its fetch thread is done: that thread writes
        in the run folder, which is removed here."""
        if run.preparing or (run.failed is None and not run.aborted):
            return
        if run.failed is not None and not run.aborted:
            canceled = run.failed["code"] == "Canceled"
            report = {"attempt": run.attempt, "node_rank": run.node_rank,
                      "history": ["Preparing", "Canceled" if canceled else "Failed"],
                      "error": run.failed, "exit_code": None, "ended": True}
            if not self._send_report(run, report):
                return
        with self.lock:
            self.runs.pop(run.key, None)
            self.done.add(run.key)
        shutil.rmtree(self.root / "runs" / f"{run.job}.{run.attempt}", ignore_errors=True)

    def _publish(self, run: Run) -> None:
        """Send and commit the run's outputs before its final report (a failed job's too: Azure keeps
        what a failed job wrote). A failure to publish fails the job, saying why."""
        assert run.staged is not None
        try:
            run.staged.publish()
        except TransferError as exc:
            if exc.gone:
                run.aborted = True
            else:
                self._fail(run, "OutputsNotPublished", f"could not send the job's outputs to the server: {exc.message}")
        except Exception as exc:  # a file it cannot read, a full disk: said once, never tried every pass
            log.exception("publishing the outputs of %s failed", run.job)
            self._fail(run, "OutputsNotPublished", f"could not send the job's outputs to the server: "
                                                   f"{describe_error(exc)}")
        finally:
            run.published = True  # sent, or its failure said in the final report: not tried again

    def _report_of(self, run: Run, observation: RunObservation, ended: bool) -> dict[str, Any]:
        history, error = list(observation.history), observation.error
        if ended and not observation.ended and run.canceling:  # killed while told to cancel: as asked
            history.append("Canceled")
            error = {"code": "Canceled", "message": f"canceled; the job's launcher on node {self.node_id} "
                                                    "stopped before it reported the end"}
        elif ended and not observation.ended:  # the launcher died without its last word
            history.append("Failed")
            error = {"code": "LauncherLost", "message": f"the job's launcher on node {self.node_id} stopped "
                                                        "without reporting an end (killed or crashed)"}
        if ended and history[-1:] == ["Failed"] and self.limits.oom_killed(since=run.oom_before):
            error = {"code": "OutOfMemory", "message": (
                f"the job ran out of memory: node {self.node_id} is held to its size's "
                f"{self.limits.shape.memory_gb:g} GB ({self.limits.size}), and a process was killed "
                "for going over it; use a size with more memory or make the job use less")}
        if ended and run.failed is not None and history[-1:] == ["Completed"]:
            history[-1], error = "Failed", run.failed  # its outputs did not reach the server
        return {"attempt": run.attempt, "node_rank": run.node_rank, "history": history, "error": error,
                "exit_code": observation.exit_code, "ended": ended}

    def _ship(self, run: Run, everything: bool, inline: bool = False) -> list[dict[str, Any]]:
        """Send what each artifact file gained since the last pass (logs while running, and outputs
        too at the end). With `inline` (the final report's pass), what is left, when it is small, is
        returned instead to go with the report (cible.agent.shipping)."""
        pending = pending_files(Path(run.handle["run_dir"]), run.node_rank, run.shipped, everything)
        if inline and (carried := inline_all(pending)) is not None:
            return carried
        for item in pending:
            ship_file(lambda rel, offset, data: self._call("PUT", f"/runs/{run.job}/files/{rel}", content=data,
                                                           params={"attempt": run.attempt, "offset": offset}),
                      item, run.shipped)
        return []

    # -- stopping --------------------------------------------------------------------
    def shutdown(self) -> None:
        """End every run and the node's limits (whatever is left in its group is killed)."""
        self.stopping.set()
        with self.lock:
            runs = list(self.runs.values())
        if self.runner is not None:
            for run in runs:
                self._cancel(run)
            self.runner.close()
        try:
            self.limits.destroy()
        except Exception:
            log.exception("removing the node's limits failed")
        self.http.close()


def read_url_file(path: Path) -> str:
    """The server's URL kept in `path`: its first line. ValueError when there is none."""
    words = path.read_text(encoding="utf-8").split()
    url = words[0] if words else ""
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"{path} holds no http(s) URL")
    return url.rstrip("/")


def _usage(limits: NodeLimits, gpu_ids: list[str] | None) -> dict[str, Any]:
    """What the node uses now: its limits' reading, and its GPUs' utilisation and memory (NVML)."""
    try:
        usage = limits.usage()
    except Exception:  # usage is informative only
        usage = {}
    try:
        if readings := gpus.sample(gpus.node_idents(gpu_ids)):
            usage["gpus"] = readings
    except Exception:  # informative only, as above
        log.debug("reading the node's GPUs failed", exc_info=True)
    return usage
