"""bench/batch.py's scoring script: pyarrow read -> predict -> one DataFrame per mini-batch (file, row, pred),
as a user who read Azure's docs would write it for speed. Each run() call's start and end go to
$BENCH_TIMES/<pid>.txt, so the benchmark can see the runner's own time between calls."""

import os
import time

import joblib
import numpy as np
import pandas as pd
import pyarrow.csv as pv

model = None
times = None


def init():
    global model, times
    folder = os.environ["AZUREML_MODEL_DIR"]
    found = [os.path.join(d, f) for d, _, fs in os.walk(folder) for f in fs if f.endswith(".joblib")]
    model = joblib.load(found[0])
    if os.environ.get("BENCH_TIMES"):
        times = open(os.path.join(os.environ["BENCH_TIMES"], f"{os.getpid()}.txt"), "a", buffering=1)


def run(mini_batch):
    start = time.time()
    frames = []
    for path in mini_batch:
        table = pv.read_csv(path)
        features = np.column_stack([c.to_numpy() for c in table.columns])
        pred = model.predict(features)
        frames.append(pd.DataFrame({"file": os.path.basename(path), "row": np.arange(len(pred)), "pred": pred}))
    result = pd.concat(frames, ignore_index=True)
    if times is not None:
        times.write(f"{start} {time.time()}\n")
    return result
