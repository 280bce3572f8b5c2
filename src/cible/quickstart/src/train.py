"""Train an iris classifier: parameters and metrics go to MLflow, the model to an mlflow_model output."""

import argparse

import mlflow
import mlflow.sklearn
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.model_selection import train_test_split

parser = argparse.ArgumentParser()
parser.add_argument("--data", required=True)
parser.add_argument("--C", type=float, default=1.0)
parser.add_argument("--model", required=True)
args = parser.parse_args()

frame = pd.read_csv(args.data)
X, y = frame.drop(columns="species"), frame["species"]
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)
print(f"training on {len(X_train)} rows, testing on {len(X_test)}")

# No start_run(): the job's run is already active through MLFLOW_RUN_ID, as on Azure.
mlflow.log_param("C", args.C)
model = LogisticRegression(C=args.C, max_iter=500).fit(X_train, y_train)
predictions = model.predict(X_test)
accuracy = accuracy_score(y_test, predictions)
mlflow.log_metric("accuracy", accuracy)
mlflow.log_metric("f1_macro", f1_score(y_test, predictions, average="macro"))
print(f"accuracy {accuracy:.3f}")

mlflow.sklearn.save_model(model, args.model, input_example=X_test.head(3))
print("model saved to the 'model' output")
