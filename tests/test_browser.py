"""Both UIs in a fresh headless Chromium, as a new user sees them after `make tune`.

A small study (diabetes-reference: lr up to 10, so some trials diverge) is tuned by a real `tune` process into
temporary stores; `python -m pipeline mlflow-ui` (what `make mlflow-ui` runs) and `optuna-dashboard` serve them on
free loopback ports; Debian's Chromium (never a downloaded browser), driven by Playwright, opens the link the
summary printed and the dashboard, each in a fresh profile. Assertions are on the DOM and on the plots' own
layout (Plotly's ``_fullLayout``); screenshots are kept under ``test-artifacts/browser/`` (``$BROWSER_ARTIFACTS``).

Without /usr/bin/chromium the tests are skipped, except in CI (``CI`` set), where `.ci/run` installs it.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
from conftest import study_yaml
from optuna.trial import TrialState

from pipeline import config

pytestmark = pytest.mark.slow

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",  # tests and CI run as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(os.environ.get("BROWSER_ARTIFACTS", config.ROOT / "test-artifacts" / "browser"))
TRIALS, EPOCHS = 24, 100
PAGE_TIMEOUT_MS = 60_000  # the machine is shared; a UI may take a while to draw

if not CHROMIUM.exists():
    if os.environ.get("CI"):
        raise RuntimeError(
            f"{CHROMIUM} is missing: .ci/run installs Debian's chromium (apt-get install chromium)"
        )
    pytest.skip(
        f"{CHROMIUM} not installed (apt-get install chromium); CI installs it", allow_module_level=True
    )
sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, proc: subprocess.Popen, what: str) -> None:
    """Poll ``url`` until it answers 200; fail with the server's output if it dies first."""
    while True:
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"{what} exited with {proc.returncode} before answering:\n{out}\n{err}")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        time.sleep(0.2)


@contextlib.contextmanager
def server(cmd: list[str], url: str, what: str):
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(url, proc, what)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


class Tuned:
    def __init__(self, root: Path):
        self.root = root
        self.journal = root / "optuna.journal"
        self.tracking = f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"
        self.study_file = study_yaml(
            "diabetes-reference.yaml",
            root / "diabetes-reference.yaml",
            training={"epochs": EPOCHS},
            budget={"trials": TRIALS},
        )
        env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
        done = subprocess.run(
            [sys.executable, "-m", "pipeline", "tune", str(self.study_file)]
            + ["--storage", str(self.journal), "--tracking-uri", self.tracking, "--no-progress"],
            capture_output=True,
            text=True,
            env=env,
            cwd=config.ROOT,
        )
        assert done.returncode == 0, done.stderr
        self.summary = done.stdout
        self.study = optuna.load_study(
            study_name="diabetes-reference",
            storage=optuna.storages.JournalStorage(
                optuna.storages.journal.JournalFileBackend(str(self.journal))
            ),
        )


@pytest.fixture(scope="module")
def tuned(tmp_path_factory) -> Tuned:
    return Tuned(tmp_path_factory.mktemp("browser"))


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        # Playwright adds its own --headless; the flags are Debian's Chromium's as root, in a fresh profile.
        launched = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser):
    """A fresh browser profile (no localStorage, no cookies) per test: what a new user's browser has."""
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    context.set_default_timeout(PAGE_TIMEOUT_MS)
    yield context.new_page()
    context.close()


def keep(page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path))
    return path


# ----------------------------------------------------------------------------------------------------- MLflow


@pytest.fixture(scope="module")
def mlflow_ui(tuned):
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "pipeline",
        "mlflow-ui",
        "--backend-store-uri",
        tuned.tracking,
        "--port",
        str(port),
    ]
    with server(cmd, f"http://127.0.0.1:{port}/health", "mlflow-ui"):
        yield f"http://127.0.0.1:{port}"


def printed_link(summary: str) -> str:
    (link,) = re.findall(r"open (http://127\.0\.0\.1:5000/\S+)", summary)
    return link


def test_the_summary_prints_a_link_to_the_training_runs_view(tuned):
    link = printed_link(tuned.summary)
    assert "/runs?" in link and "workflowType=machine_learning" in link and "compareRunsMode=CHART" in link


def test_the_printed_mlflow_link_opens_the_trials_with_their_curves_and_parameters(tuned, mlflow_ui, page):
    link = printed_link(tuned.summary).replace("http://127.0.0.1:5000", mlflow_ui)
    page.goto(link)
    best = tuned.study.best_trial
    best_run = f"trial-{best.number:04d}"
    page.get_by_text(best_run).first.wait_for()
    page.get_by_text("Parameters", exact=True).first.wait_for()  # the card listing the drawn runs' params
    page.locator("text=val_loss").first.wait_for()
    page.wait_for_timeout(2000)  # let the charts draw before the screenshot
    keep(page, "mlflow-link")
    text = page.inner_text("body")

    # Model training, not the GenAI overview; no Assistant panel over the page.
    assert "Model training" in text and "Runs" in text
    assert "/runs?" in page.url and "Traces" not in text.split("Model training", 1)[1].split("Runs", 1)[0]
    assert "Ask questions about your experiments" not in text  # the Assistant panel stays closed
    # The runs are listed best first: the first trial named in the runs list is the study's best.
    names = re.findall(r"trial-\d{4}", text)
    assert names and names[0] == best_run, names[:5]
    complete = sorted(tuned.study.get_trials(states=(TrialState.COMPLETE,)), key=lambda t: t.value)
    for t in complete[:10]:
        assert f"trial-{t.number:04d}" in text
    # With their parameters: names and the best trial's values as MLflow logged them.
    for name in best.params:
        assert name in text, name
    assert str(best.params["lr"])[:8] in text
    # The charts: one line per drawn run for the loss curves, on a log y axis.
    chart = page.locator(".js-plotly-plot").first
    chart.wait_for()
    layout = page.evaluate(
        "() => { const el = document.querySelector('.js-plotly-plot'); return el._fullLayout.yaxis.type }"
    )
    assert layout == "log"


def test_the_runs_table_lists_every_trial_with_params_and_final_metrics(tuned, mlflow_ui, page):
    link = printed_link(tuned.summary).replace("http://127.0.0.1:5000", mlflow_ui)
    page.goto(link.replace("compareRunsMode=CHART", "compareRunsMode=TABLE"))
    page.get_by_text("final_loss", exact=True).first.wait_for()
    best = tuned.study.best_trial
    page.get_by_text(f"trial-{best.number:04d}").first.wait_for()
    keep(page, "mlflow-table")
    text = page.inner_text("body")
    for column in ("lr", "exponential.decay_rate", "final_loss", "best_loss", "state"):
        assert column in text, column
    # Sorted best first, diverged trials (no final_loss) after every complete one.
    names = re.findall(r"trial-\d{4}", text)
    assert names[0] == f"trial-{best.number:04d}"


# ------------------------------------------------------------------------------------------- optuna-dashboard


@pytest.fixture(scope="module")
def dashboard(tuned):
    port = free_port()
    exe = Path(sys.executable).parent / "optuna-dashboard"
    cmd = [str(exe), str(tuned.journal), "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--artifact-dir", str(config.optuna_artifact_dir(str(tuned.journal)))]
    with server(cmd, f"http://127.0.0.1:{port}/api/studies", "optuna-dashboard"):
        yield f"http://127.0.0.1:{port}"


def plot_layout(page, element_id: str) -> dict:
    return page.evaluate(
        """id => { const el = document.getElementById(id); const fl = el._fullLayout;
                   return {type: fl.yaxis.type, range: fl.yaxis.range, traces: el.data.length} }""",
        element_id,
    )


def test_the_dashboard_shows_the_study_with_its_trial_count_note_and_learning_curves(tuned, dashboard, page):
    study_id = tuned.study._study_id
    page.goto(f"{dashboard}/dashboard")
    page.get_by_text("diabetes-reference").first.wait_for()
    keep(page, "dashboard-home")

    page.goto(f"{dashboard}/dashboard/studies/{study_id}")
    page.locator("#graph-intermediate-values .js-plotly-plot, #graph-intermediate-values").first.wait_for()
    page.wait_for_function("() => document.getElementById('graph-intermediate-values')?._fullLayout")
    page.wait_for_timeout(1500)
    keep(page, "dashboard-study")
    text = page.inner_text("body")
    assert "Intermediate values" in text
    assert str(tuned.study_file) in text  # the study's file, on the first page of "Study User Attributes"
    curves = plot_layout(page, "graph-intermediate-values")
    assert curves["traces"] >= len(tuned.study.get_trials(states=(TrialState.COMPLETE,)))

    # optuna-dashboard 0.21 shows the study's note on its own page: "Note" in the sidebar, one click away.
    page.get_by_role("link", name="Note").first.click()
    page.get_by_text("Linear regression on scikit-learn's diabetes data").first.wait_for()
    keep(page, "dashboard-note")
    text = page.inner_text("body")
    assert "/note" in page.url
    assert str(tuned.study_file) in text  # the note: the description and the file

    page.goto(f"{dashboard}/dashboard/studies/{study_id}/trials")
    page.get_by_text(f"{TRIALS} Trials").first.wait_for()  # the trial count
    keep(page, "dashboard-trials")


def test_the_default_learning_curve_plot_keeps_the_complete_trials_readable(tuned, dashboard, page):
    """The y-range of the learning-curve and history plots, as drawn by default (linear axis, pruned trials
    included), spans at most about 10x the range of the complete trials' values."""
    study_id = tuned.study._study_id
    complete = tuned.study.get_trials(states=(TrialState.COMPLETE,))
    diverged = [t for t in tuned.study.get_trials() if t.user_attrs.get("prune_reason") == "diverged"]
    assert complete and diverged, "the study should have both complete and diverged trials"
    values = [v for t in complete for v in t.intermediate_values.values()]
    low, high = min(values), max(values)
    page.goto(f"{dashboard}/dashboard/studies/{study_id}")
    page.wait_for_function("() => document.getElementById('graph-intermediate-values')?._fullLayout")
    page.wait_for_function("() => document.getElementById('plot-history')?._fullLayout")
    page.wait_for_timeout(1500)
    for element in ("graph-intermediate-values", "plot-history"):
        layout = plot_layout(page, element)
        bottom, top = layout["range"]
        if layout["type"] == "log":
            bottom, top = 10**bottom, 10**top
        assert top - bottom <= 10 * (high - low), (element, layout, low, high)
        assert math.isfinite(top) and top <= high + 10 * (high - low), (element, layout)
