"""What the two UIs show first: the study's note in optuna-dashboard, the default view of its MLflow experiment,
and the links the summary prints."""

from __future__ import annotations

import math
import urllib.parse

import optuna

from pipeline import config
from pipeline.study.spec import StudySpec

# The MLflow UI's address when the store is the local sqlite file: `make mlflow-ui` serves it there.
LOCAL_MLFLOW_UI = "http://127.0.0.1:5000"
LOCAL_DASHBOARD = "http://127.0.0.1:8080"
# The final metrics shown as columns of the runs table (pipeline.tracking logs them; diverged runs have none of the
# final_* ones, so sorting by final_loss puts them last).
TABLE_METRICS = ("final_loss", "best_loss", "epochs_run", "diverged_loss")


def study_note(spec: StudySpec) -> str:
    """The study's note for optuna-dashboard (Markdown): its description and the file it comes from."""
    lines = [f"## {spec.name}", ""]
    if spec.description:
        lines += [spec.description.strip(), ""]
    lines.append(f"Study file: `{spec.path}`")
    return "\n".join(lines)


def describe_study(study: optuna.Study, spec: StudySpec) -> None:
    """Show the study's description and file in optuna-dashboard: as user attributes (the study page's "Study
    User Attributes" table) and as the study's note (0.21 shows it on its own page, "Note" in the sidebar). The
    note is written only when it changed: optuna-dashboard's package takes a second or two to import."""
    note = study_note(spec)
    if study.user_attrs.get("description") != spec.description:
        study.set_user_attr("description", spec.description)
    if study.user_attrs.get("note") == note:
        return
    from optuna_dashboard import save_note

    save_note(study, note)
    study.set_user_attr("note", note)


def mlflow_param_name(optuna_name: str) -> str:
    """The MLflow param of an Optuna parameter: the same name, except that a factor searched as 1 - x
    (``momentum.one_minus_beta``) is logged as the factor itself (``momentum.beta``)."""
    branch, dot, name = optuna_name.rpartition(".")
    if dot and name.startswith("one_minus_"):
        return f"{branch}.{name[len('one_minus_') :]}"
    return optuna_name


def searched_params(study: optuna.Study) -> list[str]:
    """The MLflow names of every parameter the study's trials sampled, in the order they first appear."""
    names: dict[str, None] = {}
    for trial in study.get_trials(deepcopy=False):
        for name in trial.params:
            names.setdefault(mlflow_param_name(name), None)
    return list(names)


def set_mlflow_view(study: optuna.Study, tracker) -> None:
    """Make the printed MLflow link open the runs sorted best first, with the searched params as columns."""
    tracker.set_default_view(searched_params(study), list(TABLE_METRICS))


def mlflow_link(tracking_uri: str | None, experiment_id: str | None) -> str | None:
    """The URL of the study's runs in the MLflow UI, in the Model-training view, sorted best first, with the
    searched params as columns (the experiment's shared view, see ``Tracker.set_default_view``).

    A local sqlite store is served by `make mlflow-ui` at 127.0.0.1:5000; an http(s) tracking URI is a server
    whose UI is at the same address.
    """
    if not tracking_uri or experiment_id is None:
        return None
    if tracking_uri.startswith(("http://", "https://")):
        base = tracking_uri.rstrip("/")
    elif tracking_uri.startswith("sqlite:"):
        base = LOCAL_MLFLOW_UI
    else:
        return None
    query = urllib.parse.urlencode(
        {
            "workflowType": "machine_learning",
            "viewStateShareKey": config.MLFLOW_VIEW_KEY,
            "compareRunsMode": "CHART",
        }
    )
    return f"{base}/#/experiments/{experiment_id}/runs?{query}"


def loss_meaning(data, entry_point: str | None = None) -> str:
    """What the study's loss is, in words: the summary's "loss 0.424" means nothing without it.

    ``entry_point``: a user's model (``model: {entry_point: ...}``), whose loss is its own ``loss``."""
    split = "validation" if data.X_val.shape[0] else "training"
    if entry_point is not None:
        scaled = (
            " on the standardised target" if data.task == "regression" and data.target_scale != 1.0 else ""
        )
        return f"{split} loss as {entry_point}'s loss() defines it{scaled}"
    if data.task == "regression":
        if data.target_scale != 1.0:
            return (
                f"{split} MSE on the standardised target: 1.0 = predicting the mean; "
                f"x {data.target_scale**2:.4g} gives it in the target's own units squared"
            )
        return f"{split} MSE in the target's own units"
    if data.task == "binary":
        return f"{split} cross-entropy (log loss in nats; 0.693 = a coin flip)"
    return f"{split} softmax cross-entropy (nats; log k = uniform over k classes)"


EDGE = 0.05  # a best value within 5% of a searched range (in log space for a log range) sits at its edge


def range_edge_warnings(study: optuna.Study) -> list[str]:
    """One line per searched number whose best value lies within :data:`EDGE` of its range's bound (the range's
    position measured in log space for a log range): the optimum may lie outside, so widen that side."""
    try:
        best = study.best_trial
    except ValueError:  # no complete trial
        return []
    lines = []
    for name, value in best.params.items():
        dist = best.distributions.get(name)
        if not isinstance(
            dist, optuna.distributions.FloatDistribution | optuna.distributions.IntDistribution
        ):
            continue
        low, high, v = float(dist.low), float(dist.high), float(value)
        if high <= low:
            continue
        if dist.log:
            position = (math.log(v) - math.log(low)) / (math.log(high) - math.log(low))
        else:
            position = (v - low) / (high - low)
        if position >= 1 - EDGE:
            lines.append(
                f"{name} = {v:.4g} is at the top of its range [{low:.4g}, {high:.4g}]: raise its `high` in the study file"
            )
        elif position <= EDGE:
            lines.append(
                f"{name} = {v:.4g} is at the bottom of its range [{low:.4g}, {high:.4g}]: lower its `low` in the study file"
            )
    return lines
