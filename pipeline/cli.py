"""Command line: ``python -m pipeline COMMAND STUDY [options]``.

Thin on purpose: parse, call one function, print, exit with a code of ``pipeline.exitcodes.ExitCode``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

from pipeline import config
from pipeline.errors import ConfigError, NoCompleteTrial, PipelineError, StudyLocked
from pipeline.exitcodes import ExitCode

OK, NOTHING, BAD_INPUT = ExitCode.OK, ExitCode.NOTHING, ExitCode.BAD_INPUT


def _int_at_least(low: int):
    """An argparse type: an int >= low, with the house message."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low:
            raise argparse.ArgumentTypeError(f"must be an int >= {low}. Got {text!r} instead.")
        return value

    return parse


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number > 0. Got {text!r} instead.") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a number > 0. Got {text!r} instead.")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (value >= 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a number >= 0. Got {text[:200]!r} instead.")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.add_argument("study", metavar="STUDY", help="a study file, e.g. studies/diabetes-reference.yaml")
        p.add_argument(
            "--storage",
            metavar="URL",
            help=f"Optuna storage (default: ${config.STORAGE_ENV}, else {config.DEFAULT_STORAGE})",
        )
        p.add_argument(
            "--tracking-uri", metavar="URI", help="MLflow tracking URI (default: sqlite in mlruns/)"
        )
        return p

    tune = command("tune", "run (or resume) the study: new trials add to the stored ones")
    tune.add_argument(
        "--trials", type=_int_at_least(1), metavar="N", help="trials to run now (overrides budget)"
    )
    tune.add_argument(
        "--timeout", type=_positive_float, metavar="S", help="stop starting trials after S seconds"
    )
    tune.add_argument(
        "--worker",
        type=_int_at_least(0),
        default=0,
        metavar="K",
        help="index of this process when several share the study (offsets the sampler seed; default 0)",
    )
    tune.add_argument(
        "--fail-stale-after",
        type=_positive_float,
        metavar="H",
        help="first mark FAIL the trials RUNNING for more than H hours (left by a killed worker)",
    )
    tune.add_argument(
        "--heartbeat-interval",
        type=_int_at_least(1),
        metavar="S",
        help="database storages: each running trial beats every S s (overrides workers.heartbeat_interval)",
    )
    tune.add_argument(
        "--grace-period",
        type=_int_at_least(1),
        metavar="S",
        help="a trial silent for S s is failed and retried by a live worker (default 2 x interval)",
    )
    tune.add_argument(
        "--min-free-mb",
        type=_non_negative_float,
        default=50.0,
        metavar="MB",
        help="stop before a trial when a store's filesystem has less free space than this (default 50; 0: off)",
    )
    tune.add_argument(
        "--exclusive",
        action="store_true",
        help="refuse to run (exit 75, naming the holder's host, pid and start) while another --exclusive run of "
        "this study holds its lock; without it runs of a study cooperate as workers, and a plain run beside an "
        "exclusive one still joins as a worker",
    )
    tune.add_argument(
        "--new-version",
        action="store_true",
        help="start STUDY's next version, <name>.v2 (.v3, ...: Optuna study and MLflow experiment), with the latest "
        "version's best settings as its first trials; for a study file that no longer matches its stored study",
    )
    tune.add_argument(
        "--summary-json",
        metavar="FILE",
        help="append this run's summary to FILE as one JSON object per line (JSON Lines), for monitoring",
    )
    tune.add_argument("--no-progress", action="store_true", help="no progress bar")
    command("best", "print the best complete trial as JSON (exit 1 when there is none)")
    studies = sub.add_parser(
        "studies",
        help="list the studies in a storage: version, trials by state, best value, created, last activity",
        description="Every study in the Optuna storage with its version, trials by state, best value, creation "
        "and last activity (UTC). Reads only; imports no MLflow.",
    )
    studies.add_argument(
        "--storage",
        metavar="URL",
        help=f"Optuna storage (default: ${config.STORAGE_ENV}, else {config.DEFAULT_STORAGE})",
    )
    studies.add_argument("--json", action="store_true", help="print the list as JSON (for scripts)")
    delete = sub.add_parser(
        "delete",
        help="delete a study: the Optuna study and its MLflow experiment (asks first unless --yes)",
        description="Delete the Optuna study, its MLflow experiment (runs, models, artifacts) and its Optuna "
        "artifacts, so that the name can be tuned again from trial 0. Without --yes it asks on a terminal and "
        "refuses elsewhere.",
    )
    delete.add_argument(
        "study", metavar="STUDY", help="a study file (.yaml/.yml: the study its `name` names) or a study name"
    )
    delete.add_argument(
        "--storage",
        metavar="URL",
        help=f"Optuna storage (default: ${config.STORAGE_ENV}, else {config.DEFAULT_STORAGE})",
    )
    delete.add_argument(
        "--tracking-uri", metavar="URI", help="MLflow tracking URI (default: sqlite in mlruns/)"
    )
    delete.add_argument("--yes", action="store_true", help="delete without asking")
    command("lr-find", "LR range test (Smith 2015): divergence point, suggested rates and search range, plot")
    train = command(
        "train-best",
        "train the best trial's complete settings, save them under trained/STUDY/, log an MLflow pyfunc model",
    )
    train.add_argument(
        "--register", metavar="NAME", help="register the model in MLflow's model registry as NAME"
    )
    train.add_argument(
        "--out", metavar="DIR", help="folder for params.npy and settings.json (default: trained/<study>)"
    )
    report = command("report", "write the study's plots under reports/STUDY/ and log them to MLflow")
    report.add_argument(
        "--out", metavar="DIR", help="folder for the PNG files (default: reports/<study name>)"
    )
    ui = sub.add_parser(
        "mlflow-ui",
        help="browse the MLflow store: one lean server process (what `make mlflow-ui` runs)",
        description="MLflow's UI on the local store, in one process without job workers: about 230 MB.",
    )
    ui.add_argument(
        "--backend-store-uri",
        metavar="URI",
        default=None,
        help="MLflow store (default: sqlite in mlruns/, or $MLFLOW_TRACKING_URI)",
    )
    ui.add_argument("--default-artifact-root", metavar="DIR", default=None, help="default: mlruns/artifacts")
    ui.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)"
    )
    ui.add_argument("--port", type=_int_at_least(1), default=5000, metavar="N", help="default 5000")
    return parser


def main(argv: list[str] | None = None) -> int:
    from pipeline import secrets

    for url in (
        *(argv if argv is not None else sys.argv[1:]),
        os.environ.get("MLFLOW_TRACKING_URI"),
        os.environ.get(config.STORAGE_ENV),
    ):
        if url and "://" in url:
            secrets.register(url)
    # Before anything can print: a password in a URL never reaches a terminal or a log.
    with secrets.masked_streams():
        return _main(argv)


def _main(argv: list[str] | None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _dispatch(args)
    except BaseException as exc:
        code = exit_code_for(exc)
        if code is None:
            raise
        return code


def _dispatch(args) -> int:
    if args.command == "tune":
        return _tune(args)
    if args.command == "best":
        return _best(args)
    if args.command == "lr-find":
        return _lr_find(args)
    if args.command == "report":
        return _report(args)
    if args.command == "mlflow-ui":
        return _mlflow_ui(args)
    if args.command == "train-best":
        return _train_best(args)
    if args.command == "studies":
        return _studies(args)
    if args.command == "delete":
        return _delete(args)
    raise AssertionError(args.command)  # argparse only lets known commands through


def exit_code_for(exc: BaseException) -> int | None:
    """Print the one line a user (or a cron log) needs for ``exc`` and return the exit code; None: a bug, which
    keeps its traceback."""
    from pipeline.tuning.writes import StoreWriteError  # no Optuna or MLflow behind it

    if isinstance(exc, NoCompleteTrial):
        print(str(exc), file=sys.stderr)
        return NOTHING
    if isinstance(exc, StudyLocked):  # one line a monitor can read; not "bad input"
        print(f"locked: {exc}; exit {int(ExitCode.LOCKED)}", file=sys.stderr)
        return ExitCode.LOCKED
    if isinstance(exc, PipelineError):
        print(f"error: {exc}", file=sys.stderr)
        return BAD_INPUT
    if isinstance(exc, KeyboardInterrupt):
        return _interrupted()
    if isinstance(exc, StoreWriteError):
        print(f"error: {exc}", file=sys.stderr)
        return ExitCode.STORE_ERROR
    if isinstance(exc, Exception) and _caused_by_interrupt(exc):  # a Ctrl-C that hit a library's cleanup
        return _interrupted()
    return None


def _mlflow_ui(args) -> int:
    from pipeline.tracking import serve_ui

    store = args.backend_store_uri or config.default_tracking_uri()
    artifacts = args.default_artifact_root or str(config.default_artifact_root())
    print(f"MLflow UI on {store} at http://{args.host}:{args.port} (Ctrl-C stops it)", file=sys.stderr)
    serve_ui(store, artifact_root=artifacts, host=args.host, port=args.port)
    return OK


def _interrupted() -> int:
    print(
        "interrupted: finished trials are stored; a trial cut short is marked FAIL now or repaired by the next run",
        file=sys.stderr,
    )
    return ExitCode.INTERRUPTED


def _caused_by_interrupt(exc: BaseException) -> bool:
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, KeyboardInterrupt):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _load(args, **overrides):
    from pipeline import api

    return api.load(args.study, **overrides)


def _tune(args) -> int:
    """Run the study between two stamped log lines (start, end with the exit code), whatever happens between."""
    from pipeline import runlog

    log = runlog.RunLog(study_file=args.study, storage=args.storage, worker=args.worker)
    summary, code = None, None
    try:
        summary = _run_tune(args, log)
        code = tune_exit_code(summary)
        return code
    except BaseException as exc:
        if log.started_at is None:  # the study file did not load: the log still shows the run, first
            log.start()
        code = exit_code_for(exc)
        log.error = f"{type(exc).__name__}: {exc}"
        if code is None:
            raise
        return code
    finally:
        log.end(summary, code, json_path=log.json_path)


def _run_tune(args, log):
    from pipeline import api
    from pipeline.summary import render as render_summary

    if args.summary_json:
        from pipeline.paths import writable_folder

        target = Path(args.summary_json)
        if target.is_dir():
            raise ConfigError(
                "is a folder; give a file, e.g. logs/tune.jsonl.", key="--summary-json", value=str(target)
            )
        writable_folder(target.parent, key="--summary-json", shown=target)
        log.json_path = str(target)
    spec = _load(args, trials=args.trials, timeout=args.timeout)
    if args.heartbeat_interval is not None or args.grace_period is not None:
        from pipeline.tuning.rdb import with_flags

        storage = config.storage_url(args.storage)
        spec = with_flags(spec, storage, args.heartbeat_interval, args.grace_period)
    log.study = spec.name
    log.start()
    # A progress bar redrawn into a log file (CI, cron) is noise: only draw it on a terminal.
    progress = not args.no_progress and sys.stderr.isatty()
    summary = api.tune(
        spec,
        storage=args.storage,
        tracking_uri=args.tracking_uri,
        progress=progress,
        worker=args.worker,
        fail_stale_after=args.fail_stale_after * 3600 if args.fail_stale_after else None,
        min_free_mb=args.min_free_mb,
        exclusive=args.exclusive,
        new_version=args.new_version,
    )
    print(render_summary(summary))
    return summary


def tune_exit_code(summary) -> int:
    """0 ok; 3 some trials of this run failed; 1 the study has no complete trial; 128 + N stopped by signal N."""
    if summary.stop_reason == "low-disk":
        return ExitCode.STORE_ERROR
    if summary.stopped_by_signal:
        return 128 + summary.stopped_by_signal
    if summary.new_failed:
        return ExitCode.TRIALS_FAILED
    if summary.best is None:
        return ExitCode.NOTHING
    return OK


def _best(args) -> int:
    from pipeline import api

    spec = _load(args)
    info = api.best(spec, storage=args.storage)
    if info is None:
        print(f"study {spec.name!r} has no complete trial yet", file=sys.stderr)
        return NOTHING
    print(json.dumps(info, indent=2))
    return OK


def _studies(args) -> int:
    from pipeline import api
    from pipeline.tuning.manage import render_studies

    rows = api.studies(storage=args.storage)
    print(json.dumps(rows, indent=2) if args.json else render_studies(rows, args.storage))
    return OK


def _delete(args) -> int:
    from pipeline import api

    done = api.delete(
        args.study, storage=args.storage, tracking_uri=args.tracking_uri, confirm=_confirm_delete(args.yes)
    )
    if done is None:
        print("nothing deleted", file=sys.stderr)
        return NOTHING
    print("\n".join(done.lines()))
    return OK


def _confirm_delete(yes: bool):
    """``--yes``: go ahead; on a terminal: ask; elsewhere (cron, a pipe): refuse, since nobody can answer."""

    from pipeline.errors import ConfigError

    def confirm(name: str, trials: int) -> bool:
        if yes:
            return True
        if not sys.stdin.isatty():
            raise ConfigError(
                f"refusing to delete study {name!r} without confirmation off a terminal; pass --yes.",
                key="--yes",
            )
        try:
            answer = input(f"delete study {name} ({trials} trials) and its MLflow experiment? [y/N] ")
        except EOFError:
            answer = ""
        return answer.strip().lower() in ("y", "yes")

    return confirm


def _train_best(args) -> int:
    from pipeline import api

    done = api.train_best(
        args.study,
        storage=args.storage,
        tracking_uri=args.tracking_uri,
        out_dir=args.out,
        register=args.register,
    )
    info = done.model.info
    print(f"trained trial {info['trial']} of {info['study']} again: loss {info['value']:.6g} (reproduced)")
    print(f"  saved        {done.folder}  (params.npy, settings.json)")
    print(f"  mlflow model {done.model_uri}  (under the study's run {done.run_id})")
    if done.registered_name:
        print(f"  registered   models:/{done.registered_name}/{done.registered_version}")
    print(f"  load it      mlflow.pyfunc.load_model({done.model_uri!r}).predict(rows)")
    return OK


def _lr_find(args) -> int:
    from pipeline import api

    spec = _load(args)
    report, path = api.lr_find(spec, storage=args.storage, tracking_uri=args.tracking_uri)
    print(format_lr_find(spec.name, report, path))
    return OK


def _report(args) -> int:
    from pipeline import api

    spec = _load(args)
    notes: list[str] = []
    paths = api.report(
        spec, storage=args.storage, tracking_uri=args.tracking_uri, out_dir=args.out, notes=notes
    )
    if not paths:
        print(f"study {spec.name!r} has no finished trial to report on", file=sys.stderr)
        return NOTHING
    print(f"report of {spec.name}: {len(paths)} plot(s), logged to MLflow and attached to the Optuna study")
    for path in paths:
        print(f"  {path}")
    for note in notes:
        print(f"  {note}")
    return OK


RECOMMENDED_RULE_SHORT = (
    "minimum / 10: a tenth of the rate at the smoothed loss's minimum; at most half the bound"
)


def format_lr_find(name: str, r, path) -> str:
    s = r.suggestions
    batch = "full batch" if r.batch_size is None else f"batch size {r.batch_size}"
    lines = [
        f"LR range test for {name} ({r.optimizer}, {batch}, {len(r.lrs)} steps from {r.lrs[0]:.3g} to {r.lrs[-1]:.3g})",
        f"  stopped            {r.stop_reason}",
        f"  divergence point   {r.diverged_lr:.4g}"
        if r.diverged_lr is not None
        else "  divergence point   none",
    ]
    if r.theory_lr is not None:
        ratio = f" {r.diverged_lr / r.theory_lr:.2f}x" if r.diverged_lr is not None else ""
        lines.append(f"  2/lambda_max       {r.theory_lr:.4g}  (least-squares theory; test/theory{ratio})")
    low, high = r.search_range
    bound = f"{r.bound:.4g}" if r.bound is not None else "none (the ramp ended first)"
    lines += [
        f"  divergence bound   {bound}",
        f"  recommended lr     {r.recommended:.4g}   ({RECOMMENDED_RULE_SHORT})",
        f"  search range       [{low:.4g}, {high:.4g}]   (never past the bound; lr: auto searches this range)",
        f"  other rules        steepest descent {s.steepest:.4g}, valley {s.valley:.4g}",
        f"  plot               {path}",
    ]
    return "\n".join(lines)
