"""hello-sweep: one trial. Its parameters come from the sweep's search space; its metric goes to MLflow."""

import argparse

import mlflow

parser = argparse.ArgumentParser()
parser.add_argument("--target", type=float, required=True)
parser.add_argument("--greeting", required=True)
parser.add_argument("--rate", type=float, required=True)
args = parser.parse_args()

# A made-up objective: how far the rate is from the target, plus a little per letter of the greeting.
distance = abs(args.rate - args.target) + 0.01 * len(args.greeting)
mlflow.log_param("greeting", args.greeting)
mlflow.log_metric("distance", distance)
print(f"trial greeting={args.greeting} rate={args.rate:.4f} distance={distance:.4f}")
