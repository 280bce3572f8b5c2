"""cible's scoring server: `python -m cible.serving` is the process of one online-deployment replica.

It serves a scoring script with Azure ML's contract (azureml-spec §7): `init()` once, then
`run()` per request on `POST /score`, `GET /` for liveness and readiness, `GET /swagger.json`,
the three input modes of `run()` (a raw string, `@input_schema` from inference-schema, and
`@rawhttp` with `AMLRequest` / `AMLResponse`), `request_headers`, Azure's status codes, messages
and response headers, and the `SCORING_TIMEOUT_MS` timeout (a SIGALRM itimer, as Azure does).
Without a script (`--mlflow-model`) it serves an MLflow model the way Azure's no-code
deployment does.

Why our own server and not `azureml-inference-server-http` in each replica: measured on this
project's 2-core machine (../shared/reference/perf-anchors.md §2 and §4), Azure's server runs at
0.26-0.35x the throughput of a bare FastAPI + orjson app calling `predict` (the floor), adds
1.5-2 ms to the p50 of a 1-row request, keeps no connection alive (gunicorn sync workers close
after every response) and handles one request at a time per worker; it also drags Flask,
gunicorn and pydantic into the user's environment. This server keeps the contract and drops
the cost: a raw ASGI app (no framework) on uvicorn with uvloop and httptools when they are
installed, orjson for JSON when installed, `run()` called inline on the event loop (no thread
hop: the loop is the main thread, which is also what makes the SIGALRM timeout work), keep-alive
connections, TCP_NODELAY on every accepted socket, and no access log. `bench/serving.py`
measures it against the floor and against Azure's server in the same sweep.

Imports: only the standard library, uvicorn, and optionally orjson, inference_schema, and (in
the MLflow path only) mlflow, numpy and pandas. A replica runs inside the user's environment,
where cible's own dependencies (pydantic, fastapi, ...) are absent; the launcher puts only the
`cible` package on its PYTHONPATH. Never import cible.core or cible.server here.

Modules: `main` (command line, model folder, state file, uvicorn), `app` (the ASGI app and its
routes), `script` (loading the entry script, `init()`, the run modes), `request` (AMLRequest),
`shims` (AMLResponse, rawhttp and the import names scripts use), `swagger`, `mlflow_model` (no-code
MLflow scoring), `reload` (`--reload`), `codec` (JSON).
"""
