"""The quickstart job: prints what a job sees and writes a named output and ./outputs."""

import argparse
import os
import platform
from pathlib import Path

parser = argparse.ArgumentParser()
parser.add_argument("--greeting", required=True)
parser.add_argument("--out", required=True)
args = parser.parse_args()

print(args.greeting)
print(f"run id: {os.environ['AZUREML_RUN_ID']}  experiment: {os.environ['AZUREML_ARM_PROJECT_NAME']}")
print(f"python {platform.python_version()} in {os.getcwd()}")
Path(args.out, "report.txt").write_text(f"{args.greeting}\n")
Path("outputs").mkdir(exist_ok=True)
Path("outputs", "greeting.txt").write_text(args.greeting + "\n")
print("wrote the named output 'report' and ./outputs/greeting.txt")
