"""`python -m cible.automl.trial PLAN.json TRAINING [--validation V] [--test T] --out OUT`: one AutoML
search in the job's environment (FLAML, scikit-learn, pandas, MLflow), its data MLTable folders (or a
CSV or Parquet file), its results in OUT:

    result.json     the best learner, its configuration and metric, validation and test metrics, warnings
    trials.json     every trial FLAML made: learner, configuration, Azure's metric, times
    best_model/     the best model as an MLflow model (scikit-learn flavour, its requirements pinned)

A problem with the data or the settings ends it with exit status 2 and one line naming the field.
"""

from __future__ import annotations

import argparse
import json
import sys
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
    """The model as an MLflow model, loadable without cible: the featurizer's functions go by value."""
    import cloudpickle
    import mlflow.sklearn

    cloudpickle.register_pickle_by_value(featurize)
    try:
        mlflow.sklearn.save_model(model, str(out), serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE)
    finally:
        cloudpickle.unregister_pickle_by_value(featurize)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cible.automl.trial")
    parser.add_argument("plan")
    parser.add_argument("training")
    parser.add_argument("--validation")
    parser.add_argument("--test")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    plan = SearchPlan.from_json(Path(args.plan).read_text())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        training = read(args.training, "training_data")
        validation = read(args.validation, "validation_data") if args.validation else None
        test = read(args.test, "test_data") if args.test else None
        result, model = search(plan, training, validation, test, log_file=out / "flaml.log")
    except (ValueError, mltable.MLTableError) as exc:
        print(f"automl: {getattr(exc, 'message', exc)}", file=sys.stderr)
        return BAD_INPUT
    trials = result.trials
    (out / "trials.json").write_text(json.dumps(trials, indent=1, default=str))
    summary = {k: v for k, v in result.__dict__.items() if k != "trials"}
    (out / "result.json").write_text(json.dumps({**summary, "trials": len(trials)}, indent=1, default=str))
    if result.best_learner is not None:
        save_model(model, out / "best_model")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
