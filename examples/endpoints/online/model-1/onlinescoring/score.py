"""The scoring script of both deployments, in the shape of Azure's online endpoint samples (init() loads the
model from AZUREML_MODEL_DIR, run() takes the raw request body). The model is a linear model kept
as JSON, so the example has no binary file."""

import json
import logging
import os

import numpy

model = None


def init():
    global model
    # AZUREML_MODEL_DIR holds the model's folder under its own name: model/ here.
    model_path = os.path.join(os.getenv("AZUREML_MODEL_DIR"), "model", "linear.json")
    with open(model_path) as fh:
        model = json.load(fh)
    logging.info("Init complete")


def run(raw_data):
    logging.info("request received")
    data = numpy.array(json.loads(raw_data)["data"], dtype=float)
    result = data @ numpy.array(model["coefficients"]) + model["intercept"]
    logging.info("Request processed")
    return result.tolist()
