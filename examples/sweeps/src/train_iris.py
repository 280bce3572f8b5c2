"""sklearn-sweep: one trial. mlflow.autolog() logs the parameters and training metrics (training_f1_score...)."""

import argparse
from pathlib import Path

import mlflow
import pandas as pd
from sklearn.model_selection import train_test_split
from sklearn.svm import SVC

parser = argparse.ArgumentParser()
parser.add_argument("--iris-csv", required=True)
parser.add_argument("--C", type=float, default=1.0)
parser.add_argument("--kernel", default="rbf")
parser.add_argument("--model", required=True)
args = parser.parse_args()

# Models are not logged: a trial's model is written to the sweep's output below, and only the best
# trial's output becomes the sweep's.
mlflow.autolog(log_models=False)

df = pd.read_csv(args.iris_csv)
X, y = df.drop(columns=["species"]), df["species"]
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, random_state=42)
model = SVC(C=args.C, kernel=args.kernel).fit(X_train, y_train)
accuracy = model.score(X_test, y_test)
print(f"trial C={args.C} kernel={args.kernel} test accuracy={accuracy:.3f}")

(Path(args.model) / "model.txt").write_text(f"SVC C={args.C} kernel={args.kernel} test_accuracy={accuracy:.3f}\n")
