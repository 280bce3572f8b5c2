"""prep: split the raw CSV into train.csv and test.csv (a fixed seed, so a rerun gives the same split)."""

import argparse
from pathlib import Path

import pandas as pd
from sklearn.model_selection import train_test_split

parser = argparse.ArgumentParser()
parser.add_argument("--raw_data", required=True)
parser.add_argument("--test_ratio", type=float, default=0.2)
parser.add_argument("--train_data", required=True)
parser.add_argument("--test_data", required=True)
args = parser.parse_args()

df = pd.read_csv(args.raw_data)
train, test = train_test_split(df, test_size=args.test_ratio, random_state=42, stratify=df["species"])
train.to_csv(Path(args.train_data) / "train.csv", index=False)
test.to_csv(Path(args.test_data) / "test.csv", index=False)
print(f"prep: {len(train)} training rows, {len(test)} test rows")
