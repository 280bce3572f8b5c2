"""The batch scoring script, in the shape of Azure's batch samples: init() loads the model once per worker
from AZUREML_MODEL_DIR; run() gets a mini-batch of file paths and returns a DataFrame whose rows are
appended to predictions.csv (without the column names). The model is a linear model kept as JSON."""

import json
import logging
import os

import pandas as pd

model = None


def init():
    global model
    with open(os.path.join(os.environ["AZUREML_MODEL_DIR"], "model", "linear.json")) as fh:
        model = json.load(fh)
    logging.info("batch driver ready")


def run(mini_batch):
    frames = []
    for path in mini_batch:
        data = pd.read_csv(path)
        prediction = data.to_numpy() @ model["coefficients"] + model["intercept"]
        frames.append(pd.DataFrame({"file": os.path.basename(path), "prediction": prediction.round(4)}))
    return pd.concat(frames, ignore_index=True)
