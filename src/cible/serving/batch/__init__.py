"""cible's batch scoring runner: `python -m cible.serving.batch` is one node of a batch endpoint's job.

The contract is Azure's (azureml-spec §6.3): each worker imports the scoring script once, calls `init()`
once, then `run(mini_batch)` with `mini_batch_size` absolute file paths; `append_row` writes every returned
row to `output_file_name`, `summary_only` leaves the output folder (AZUREML_BI_OUTPUT_PATH) to the script.
The workspace server keeps the split and every mini-batch's state (server/services/batch_runs.py); the
runner asks it for work with the job's own token (CIBLE_API_URL, CIBLE_JOB_TOKEN, set by the launcher).

Modules: `node` (the node runner: listing, workers, respawns, exit code), `worker` (one worker process),
`api` (the server calls), `output` (part files, Azure's row format, the join), `mlflow_driver` (the
no-code MLflow scoring script). Standard library only at import, like cible.serving: the runner runs in
the user's environment with only the `cible` package on its path; pyarrow and pandas are used when there.
"""
