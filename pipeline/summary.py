"""What a `tune` run did, as data (:class:`RunSummary`), and its renderings: text for people, JSON for monitors.

No Optuna, no MLflow here: ``pipeline.tuning.run`` fills a :class:`RunSummary`, the CLI renders it. The text is
built from one small function per section (:data:`SECTIONS`), so a section is added or changed in one place.
"""

from __future__ import annotations

import datetime
import enum
import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pipeline import config


class StopReason(enum.StrEnum):
    """Why a run stopped starting trials. The value is what the summary and ``--summary-json`` say."""

    TRIALS = "trials"  # the run's trial budget (budget.trials / --trials) was used up
    DEADLINE = "deadline"  # the run's time budget (budget.timeout / --timeout) ran out
    CAP = (
        "cap"  # the study-wide budget.max_trials was reached (by this run or earlier ones, or other workers)
    )
    CONVERGED = "converged"  # budget.patience: no improvement beyond the tolerance over the last N trials
    EXHAUSTED = "exhausted"  # a grid study ran every point of its grid
    SIGNAL = "signal"  # a scheduler's SIGTERM: the running trial finished, then the run ended
    LOW_DISK = "low-disk"  # less free space than --min-free-mb where a store lives: stopped before a trial
    INTERRUPTED = (
        "interrupted"  # Ctrl-C: the running trial stopped at its next epoch, stored FAIL (interrupted)
    )


@dataclass
class RunSummary:
    """Everything one `tune` run did and found. ``counts`` and ``best`` are the whole study's, after the run;
    ``new_*`` and ``best_before`` are this run's, so "what changed this run" can be said."""

    study_name: str
    storage: str
    tracking_uri: str | None
    new_trials: int  # trials this process finished (other workers may add to the study meanwhile)
    elapsed: float  # seconds
    counts: dict[str, int]  # complete, pruned_diverged, pruned_underperforming, failed, running (whole study)
    best: dict | None  # best_trial_info() after the run
    first_error: str | None = None
    stopped_by_signal: int | None = None
    stale_failed: int = 0
    stop_reason: StopReason | None = None
    stop_detail: str = (
        ""  # one clause saying what the reason measured, e.g. "no improvement > 0.1% in 20 trials"
    )
    best_before: float | None = None  # the study's best value when the run began (None: there was none)
    new_failed: int = 0  # this run's trials that raised (exit code 3)
    new_pruned_deadline: int = 0  # this run's trials cut by the deadline
    started_at: datetime.datetime | None = None  # timezone-aware, UTC
    ended_at: datetime.datetime | None = None
    host: str = ""
    pid: int = 0
    worker: int = 0
    version: int = 1  # the study's version (`--new-version` makes 2, 3, ...)
    extra: dict = field(default_factory=dict)  # room for later sections without changing the constructor

    @property
    def improvement(self) -> float | None:
        """How much this run lowered the best loss (> 0), 0.0 when it did not, None when there is no best."""
        if self.best is None:
            return None
        if self.best_before is None:
            return math.inf
        return max(0.0, self.best_before - self.best["value"])

    def is_new_best(self) -> bool:
        return self.best is not None and (self.best_before is None or self.best["value"] < self.best_before)


def iso(moment: datetime.datetime | None) -> str:
    """ISO 8601 to the second with the offset (``2026-11-22T01:00:03+00:00``); '' for None."""
    return moment.isoformat(timespec="seconds") if moment is not None else ""


def now_utc() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


# --- text, one function per section -----------------------------------------------------------------------------


def _header(s: RunSummary) -> list[str]:
    total = sum(s.counts.values())
    when = f"  ({iso(s.started_at)} -> {iso(s.ended_at)})" if s.started_at else ""
    version = f" (version {s.version})" if s.version > 1 else ""
    return [
        "",
        f"study {s.study_name}{version}: {s.new_trials} new trial(s) in {s.elapsed:.1f} s, {total} in all{when}",
        f"  storage       {s.storage}",
        f"  mlflow        {s.tracking_uri or '(tracking off)'}  experiment {s.study_name!r}",
    ]


def _counts(s: RunSummary) -> list[str]:
    c = s.counts
    pruned = f"{c['pruned_diverged']} diverged, {c['pruned_underperforming']} underperforming"
    if c.get("pruned_deadline"):
        pruned += f", {c['pruned_deadline']} cut by a deadline"
    lines = [
        f"  complete      {c['complete']}",
        f"  pruned        {pruned}",
        f"  failed        {c['failed']}" + (f"  (first error: {s.first_error})" if s.first_error else ""),
    ]
    if s.stale_failed:
        lines.append(f"  stale         {s.stale_failed} trial(s) left RUNNING by a killed worker marked FAIL")
    if c["running"]:
        lines.append(f"  running       {c['running']} (other workers, or left by an interrupted run)")
    return lines


_STOP_TEXT = {
    StopReason.TRIALS: "trials: the run's trial budget is used up",
    StopReason.DEADLINE: "deadline: the run's time budget ran out",
    StopReason.CAP: "cap: the study reached budget.max_trials",
    StopReason.CONVERGED: "converged",
    StopReason.EXHAUSTED: "exhausted: every point of the grid has run",
    StopReason.SIGNAL: "signal",
    StopReason.LOW_DISK: "low-disk: too little free space where a store lives (see the error above)",
    StopReason.INTERRUPTED: "interrupted: Ctrl-C; the running trial is stored as FAIL (fail_reason interrupted)",
}


def _stopped(s: RunSummary) -> list[str]:
    if s.stop_reason is None:
        return []
    text = _STOP_TEXT.get(s.stop_reason, str(s.stop_reason))
    if s.stop_reason == StopReason.SIGNAL and s.stopped_by_signal:
        name = {2: "SIGINT", 15: "SIGTERM"}.get(s.stopped_by_signal, "")
        text = f"by signal {s.stopped_by_signal} {name}: the running trial finished, then the run ended"
    if s.stop_detail:
        text += f" ({s.stop_detail})"
    return [f"  stopped       {text}"]


def _change(s: RunSummary) -> list[str]:
    if s.best is None:
        return []
    if s.best_before is None:
        return [f"  this run      first best: {s.best['value']:.6g}"]
    if s.is_new_best():
        gain = s.best_before - s.best["value"]
        rel = f", {gain / abs(s.best_before):.2%}" if s.best_before else ""
        return [f"  this run      new best: {s.best_before:.6g} -> {s.best['value']:.6g} (-{gain:.4g}{rel})"]
    return [f"  this run      no new best (still {s.best['value']:.6g})"]


def _best(s: RunSummary) -> list[str]:
    if s.best is None:
        return ["  best          none: no trial completed"]
    b = s.best
    lines = [f"  best          trial {b['trial']}: loss {b['value']:.6g}"]
    width = max(len(k) for k in b["params"]) if b["params"] else 0
    for key, value in b["params"].items():
        shown = f"{value:.4g}" if isinstance(value, float) else value
        lines.append(f"    {key:<{width}}  {shown}")
    if s.extra.get("loss_meaning"):
        lines.append(f"  loss          {s.extra['loss_meaning']}")
    lines.append(f"  mlflow run    {b['mlflow_run_id']}")
    return lines


def _edges(s: RunSummary) -> list[str]:
    """A best value at the edge of its searched range: the optimum may lie outside it."""
    return [f"  warning       {line}" for line in s.extra.get("edge_warnings") or []]


def _make(target: str, **variables: str) -> str:
    """A `make` command that works when pasted: from the repository, or with -C from anywhere else."""
    here = Path.cwd().resolve() == config.ROOT
    words = ["make"] + ([] if here else ["-C", str(config.ROOT)]) + [target]
    words += [f"{k}={_quote(v)}" for k, v in variables.items() if v]
    return " ".join(words)


def _quote(value: str) -> str:
    import shlex

    return shlex.quote(value)


def _browse(s: RunSummary) -> list[str]:
    """What to do next, as commands that work when pasted (the tools live in the project's virtual environment,
    which is not on PATH: `make` targets, or the venv's own paths when the stores are not the defaults)."""
    venv = config.ROOT / ".venv" / "bin"
    default_storage = s.storage == config.DEFAULT_STORAGE  # what `make dashboard` opens
    if default_storage:
        dashboard = _make("dashboard") + "      # optuna-dashboard at http://127.0.0.1:8080"
    else:
        artifacts = config.optuna_artifact_dir(s.storage)
        dashboard = (
            f"{venv / 'optuna-dashboard'} {_quote(s.storage)} --artifact-dir {artifacts} --host 127.0.0.1"
        )
    lines = ["  next steps", f"    {dashboard}"]
    link = s.extra.get("mlflow_link")
    if s.tracking_uri and s.tracking_uri.startswith(("http://", "https://")):
        lines.append(f"    open {link or s.tracking_uri}")
    elif s.tracking_uri:
        if s.tracking_uri == config.default_tracking_uri():
            lines.append(f"    {_make('mlflow-ui')}      # then open the link below")
        else:
            lines.append(
                f"    {venv / 'python'} -m pipeline mlflow-ui --backend-store-uri {_quote(s.tracking_uri)}"
            )
        if link:
            lines.append(f"    open {link}")
            lines.append(
                "      (the curves of the 10 best trials; the table icon lists every trial with its params)"
            )
    study_file = s.extra.get("study_file")
    if study_file:
        if Path.cwd().resolve() != config.ROOT:
            study_file = str(Path(study_file).resolve())
        args = []
        if not default_storage:
            args.append(f"--storage {s.storage}")
        if s.tracking_uri and s.tracking_uri != config.default_tracking_uri():
            args.append(f"--tracking-uri {s.tracking_uri}")
        lines.append(
            f"    {_make('report', STUDY=study_file, ARGS=' '.join(args))}      # plots under reports/"
        )
        if s.best is not None:
            lines.append(
                f"    {_make('train-best', STUDY=study_file, ARGS=' '.join(args))}      # the best trial as an MLflow model"
            )
    return lines


# The summary's sections, in order; each takes the summary and returns its lines (maybe none).
SECTIONS: list[Callable[[RunSummary], list[str]]] = [
    _header,
    _counts,
    _stopped,
    _change,
    _best,
    _edges,
    _browse,
]


def render(s: RunSummary) -> str:
    """The summary printed at the end of `tune`."""
    return "\n".join(line for section in SECTIONS for line in section(s))


# --- JSON for monitors ---------------------------------------------------------------------------------------------


def to_json(s: RunSummary) -> dict:
    """The summary as one JSON-able object (one line of ``--summary-json``'s JSON Lines file)."""
    data = asdict(s)
    data["stop_reason"] = str(s.stop_reason) if s.stop_reason is not None else None
    data["started_at"], data["ended_at"] = iso(s.started_at), iso(s.ended_at)
    data["new_best"] = s.is_new_best()
    improvement = s.improvement
    data["improvement"] = None if improvement is None or math.isinf(improvement) else improvement
    extra = data.pop("extra")
    data.update(extra)
    return data


def _finite(value):
    """JSON has no NaN or infinity: they become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def append_json(s: RunSummary, path: Path, extra: dict | None = None) -> None:
    """Append the summary (and ``extra`` keys) as one line to ``path`` (JSON Lines), creating the file and its
    folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(_finite({**to_json(s), **(extra or {})}), default=str, allow_nan=False) + "\n"
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(line)
