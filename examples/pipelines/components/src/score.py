"""score: the accuracy of the pickled model on test.csv, written to report.txt."""

import argparse
import pickle
from pathlib import Path

import pandas as pd

parser = argparse.ArgumentParser()
parser.add_argument("--model_input", required=True)
parser.add_argument("--test_data", required=True)
parser.add_argument("--score_report", required=True)
args = parser.parse_args()

with open(Path(args.model_input) / "model.pkl", "rb") as fh:
    model = pickle.load(fh)
df = pd.read_csv(Path(args.test_data) / "test.csv")
accuracy = model.score(df.drop(columns=["species"]), df["species"])
report = f"model: {model}\naccuracy: {accuracy:.3f}\n"
(Path(args.score_report) / "report.txt").write_text(report)
print(f"score: {report}", end="")
