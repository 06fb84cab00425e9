"""``make mlflow-ui`` and ``make mlflow-server``: MLflow's UI and tracking server in one lean process."""

from __future__ import annotations

import json
import os

# Set in a fresh browser before MLflow's UI reads them (only when unset: a user's own choice stays): open on
# "Model training", not GenAI, and do not pop the Assistant panel over a third of the screen on first load.
# The keys are the UI's localStorage entries (`<key>_v<version>`, mlflow 3.17's useLocalStorage).
_UI_DEFAULTS = {
    "mlflow.workflowType_v1": "machine_learning",
    "mlflow.assistant.fab.autoOpenedOnFirstLoad_v1": True,
}
_UI_DEFAULTS_SCRIPT = (
    "<script>try{for(const [k,v] of Object.entries(DEFAULTS)){if(localStorage.getItem(k)===null)"
    "localStorage.setItem(k,JSON.stringify(v))}}catch(e){}</script>"
).replace("DEFAULTS", json.dumps(_UI_DEFAULTS))


def serve_ui(
    backend_store_uri: str,
    *,
    artifact_root: str | None = None,
    host: str = "127.0.0.1",
    port: int = 5000,
    serve_artifacts: bool = False,
    artifacts_destination: str | None = None,
) -> None:
    """MLflow's UI and tracking server in this one process (blocks until interrupted).

    ``mlflow ui`` starts a CLI process that starts 4 uvicorn workers and a job runner (huey) with its own
    workers: 15 processes, about 1.5-3 GB and 14-20 s before it answers here. Browsing one person's studies
    needs none of that: one uvicorn worker in this process, no job execution (it runs GenAI evaluation jobs),
    answers in about a quarter of the time with a sixth of the memory (``README``: measured figures).
    The index page also gets :data:`_UI_DEFAULTS`.
    """
    from mlflow.server import constants

    env = {
        constants.BACKEND_STORE_URI_ENV_VAR: backend_store_uri,
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        "_MLFLOW_SGI_NAME": "uvicorn",
        "_MLFLOW_IN_JOB_EXECUTOR": "false",
    }
    if artifact_root:
        env[constants.ARTIFACT_ROOT_ENV_VAR] = artifact_root
    if serve_artifacts:
        env[constants.SERVE_ARTIFACTS_ENV_VAR] = "true"
    if artifacts_destination:
        env[constants.ARTIFACTS_DESTINATION_ENV_VAR] = artifacts_destination
    os.environ.update(env)

    import uvicorn
    from flask import request
    from mlflow.server import app as flask_app

    @flask_app.after_request
    def _ui_defaults(response):
        if request.path == "/" and response.mimetype == "text/html":
            response.direct_passthrough = False
            html = response.get_data(as_text=True)
            response.set_data(html.replace("<head>", "<head>" + _UI_DEFAULTS_SCRIPT, 1))
        return response

    from mlflow.server.fastapi_app import app

    uvicorn.run(app, host=host, port=port, workers=1, log_level="warning")
