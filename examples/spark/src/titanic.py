"""Wrangle the Titanic passenger list with the pandas API on Spark: fill the missing cabins, drop the
rows still missing a value, and write the rest as CSV (Azure's Spark example job, in cible's words)."""

import argparse

import pyspark.pandas as ps

parser = argparse.ArgumentParser()
parser.add_argument("--titanic_data", help="the passenger list (CSV)")
parser.add_argument("--wrangled_data", help="the folder the wrangled CSV goes to")
args = parser.parse_args()

passengers = ps.read_csv(args.titanic_data, index_col="PassengerId")
passengers.fillna(value={"Cabin": "None"}, inplace=True)  # no cabin on record: say so
passengers.dropna(inplace=True)  # any other gap: the row goes
passengers.to_csv(args.wrangled_data, index_col="PassengerId")
print(f"wrangled {len(passengers)} passengers into {args.wrangled_data}")
