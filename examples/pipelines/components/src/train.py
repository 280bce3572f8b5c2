"""train: fit an SVM on train.csv and pickle it into the model output."""

import argparse
import pickle
from pathlib import Path

import pandas as pd
from sklearn.svm import SVC

parser = argparse.ArgumentParser()
parser.add_argument("--train_data", required=True)
parser.add_argument("--C", type=float, default=1.0)
parser.add_argument("--kernel", default="rbf")
parser.add_argument("--max_iter", type=int, default=-1)
parser.add_argument("--model_output", required=True)
args = parser.parse_args()

df = pd.read_csv(Path(args.train_data) / "train.csv")
model = SVC(C=args.C, kernel=args.kernel, max_iter=args.max_iter).fit(df.drop(columns=["species"]), df["species"])
with open(Path(args.model_output) / "model.pkl", "wb") as fh:
    pickle.dump(model, fh)
print(f"train: SVC C={args.C} kernel={args.kernel} on {len(df)} rows")
