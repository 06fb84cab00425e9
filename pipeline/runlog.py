"""The two lines that frame every `tune` run in a log, and its JSON Lines record, for people and monitors.

A nightly job appends night after night to one log: each run begins and ends with a line stamped in ISO 8601
(UTC) that names the host, the process, the worker, the study and the storage (password masked), so that runs can
be told apart and a monitor can grep them::

    2026-12-04T01:00:03+00:00 tune start study=diabetes-reference host=h pid=4242 worker=0 storage=studies/optuna.journal
    2026-12-04T03:00:05+00:00 tune end study=diabetes-reference host=h pid=4242 worker=0 storage=... exit=0 reason=deadline new_trials=512 best=0.4143 new_best=yes

``--summary-json FILE`` appends the run's summary (:func:`pipeline.summary.to_json`) plus ``exit_code`` as one
line, also for a run that ended before it could tune (then with ``error``). No Optuna, no MLflow here.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path

from pipeline import config
from pipeline.secrets import mask_url
from pipeline.summary import RunSummary, append_json, iso, now_utc


@dataclass
class RunLog:
    study_file: str
    storage: str | None = None
    worker: int = 0
    study: str | None = None  # the study's name, once its file is loaded
    error: str | None = None
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)
    started_at: object = None
    json_path: str | None = None  # --summary-json, once checked

    def _who(self) -> str:
        study = self.study if self.study is not None else f"? file={self.study_file}"  # it did not load
        storage = mask_url(config.storage_url(self.storage))
        return f"study={study} host={self.host} pid={self.pid} worker={self.worker} storage={storage}"

    def start(self) -> None:
        self.started_at = now_utc()
        print(f"{iso(self.started_at)} tune start {self._who()}", file=sys.stderr, flush=True)

    def end(self, summary: RunSummary | None, code: int | None, *, json_path: str | None = None) -> None:
        ended = now_utc()
        words = [f"exit={'traceback' if code is None else int(code)}"]
        if summary is not None:
            words.append(f"reason={summary.stop_reason}")
            words.append(f"new_trials={summary.new_trials}")
            if summary.best is not None:
                words.append(f"best={summary.best['value']:.6g}")
                words.append(f"new_best={'yes' if summary.is_new_best() else 'no'}")
        elif self.error:
            words.append(f"error={self.error.splitlines()[0][:200]!r}")
        print(f"{iso(ended)} tune end {self._who()} {' '.join(words)}", file=sys.stderr, flush=True)
        if json_path:
            self._append_json(Path(json_path), summary, code, ended)

    def _append_json(self, path: Path, summary: RunSummary | None, code, ended) -> None:
        extra = {"exit_code": None if code is None else int(code)}
        if summary is None:  # the run ended before it could tune: still one line, so a monitor sees the night
            record = {
                "study_name": self.study,
                "study_file": self.study_file,
                "storage": mask_url(config.storage_url(self.storage)),
                "started_at": iso(self.started_at),
                "ended_at": iso(ended),
                "host": self.host,
                "pid": self.pid,
                "worker": self.worker,
                "error": mask_url(self.error),
                **extra,
            }
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record, default=str) + "\n")
            return
        append_json(summary, path, extra=extra)
