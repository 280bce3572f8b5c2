"""`python -m cible.automl.trial PLAN TRAINING [--validation V] [--test T] --out OUT [--model DIR]`: one
AutoML search in the job's environment (FLAML, scikit-learn, pandas, MLflow), its data MLTable folders (or
a CSV or Parquet file), its results in OUT:

    result.json     the best learner, its configuration and metric, validation and test metrics, warnings
    trials.json     every trial FLAML made: learner, configuration, Azure's metric, times
    best_model/     the best model as an MLflow model (scikit-learn flavour, its requirements pinned);
                    in DIR instead when --model is given (an AutoML job's `best_model` output)

PLAN is a SearchPlan's JSON file, or `env:NAME`: the JSON in environment variable NAME (how an AutoML
job's child gets it: nothing to stage). Where the job has an MLflow run (MLFLOW_RUN_ID), the best
model's metrics, learner and configuration are logged to it.

A problem with the data or the settings ends it with exit status 2 and one line naming the field.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from cible.automl import featurize, mltable
from cible.automl.search import SearchPlan, search

BAD_INPUT = 2


def read(path: str, field_name: str):  # noqa: ANN201
    """A frame from an MLTable folder, or a CSV or Parquet file (or a folder of them)."""
    import pandas as pd

    given = Path(path)
    if (given / mltable.FILE).is_file():
        return mltable.to_pandas(mltable.parse(given, field_name=field_name))
    files = sorted(p for p in given.rglob("*") if p.is_file()) if given.is_dir() else [given]
    frames = []
    for file in files:
        if file.suffix.lower() == ".parquet":
            frames.append(pd.read_parquet(file))
        elif file.suffix.lower() in (".csv", ".tsv"):
            frames.append(pd.read_csv(file, sep="\t" if file.suffix.lower() == ".tsv" else ","))
    if not frames:
        raise ValueError(f"{field_name}: {path} holds no MLTable file, CSV or Parquet file")
    return pd.concat(frames, ignore_index=True)


def save_model(model, out: Path) -> None:  # noqa: ANN001
    """The model as an MLflow model at the top of `out`, loadable without cible: the featurizer's functions
    go by value. MLflow saves into a new folder only, and a job's output folder exists (its parent may be
    read-only): it is saved in a scratch folder, then moved in, after what an earlier attempt left there
    is cleared."""
    import cloudpickle
    import mlflow.sklearn

    out.mkdir(parents=True, exist_ok=True)
    for leftover in out.iterdir():
        if leftover.is_dir() and not leftover.is_symlink():
            shutil.rmtree(leftover)
        else:
            leftover.unlink()
    cloudpickle.register_pickle_by_value(featurize)
    try:
        with tempfile.TemporaryDirectory(prefix="cible-model-") as scratch:
            saved = Path(scratch) / "model"
            mlflow.sklearn.save_model(model, str(saved),
                                      serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE)
            for entry in saved.iterdir():
                shutil.move(str(entry), str(out / entry.name))
    finally:
        cloudpickle.unregister_pickle_by_value(featurize)


def read_plan(given: str) -> SearchPlan:
    if given.startswith("env:"):
        text = os.environ.get(given[4:])
        if text is None:
            raise ValueError(f"plan: the environment variable {given[4:]} is not set")
        return SearchPlan.from_json(text)
    return SearchPlan.from_json(Path(given).read_text())


def log_to_mlflow(plan: SearchPlan, summary: dict) -> None:  # noqa: ANN001
    """The best model's metrics, learner and configuration to the job's MLflow run, when it has one."""
    if not os.environ.get("MLFLOW_RUN_ID"):
        return
    import mlflow

    metrics = {plan.metric: summary.get("best_metric")}
    metrics.update({f"validation_{k}": v for k, v in (summary.get("validation_metrics") or {}).items()})
    metrics.update({f"test_{k}": v for k, v in (summary.get("test_metrics") or {}).items()})
    with mlflow.start_run(run_id=os.environ["MLFLOW_RUN_ID"]):
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))})
        mlflow.log_params({"best_learner": summary.get("best_learner"), "trials": summary.get("trials"),
                           **{f"best_config.{k}": v for k, v in (summary.get("best_config") or {}).items()}})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cible.automl.trial")
    parser.add_argument("plan")
    parser.add_argument("training")
    parser.add_argument("--validation")
    parser.add_argument("--test")
    parser.add_argument("--out", required=True)
    parser.add_argument("--model", help="where the best model goes (default: OUT/best_model)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        plan = read_plan(args.plan)
        training = read(args.training, "training_data")
        validation = read(args.validation, "validation_data") if args.validation else None
        test = read(args.test, "test_data") if args.test else None
        result, model = search(plan, training, validation, test, log_file=out / "flaml.log")
    except (ValueError, mltable.MLTableError) as exc:
        print(f"automl: {getattr(exc, 'message', exc)}", file=sys.stderr)
        return BAD_INPUT
    trials = result.trials
    (out / "trials.json").write_text(json.dumps(trials, indent=1, default=str))
    summary = {**{k: v for k, v in result.__dict__.items() if k != "trials"}, "trials": len(trials)}
    if result.best_learner is not None:
        save_model(model, Path(args.model) if args.model else out / "best_model")
    # Last: a result.json says the search, and its model, are whole.
    (out / "result.json").write_text(json.dumps(summary, indent=1, default=str))
    try:
        log_to_mlflow(plan, summary)
    except Exception as exc:  # noqa: BLE001 - the search and its model are whole: a tracking outage is said, not fatal
        print(f"automl: the metrics could not be logged to MLflow: {exc}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
