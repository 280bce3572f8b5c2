# Azure ML's online scoring sample (azureml-examples cli/endpoints/online/model-1/onlinescoring/score.py),
# for bench/serving.py's LogisticRegression: init() loads the model from AZUREML_MODEL_DIR, run() parses
# the raw body with the standard library's json and returns the predictions as a list.
import json
import logging
import os

import joblib
import numpy


def init():
    global model
    # AZUREML_MODEL_DIR is the folder holding the registered model's folder ("model").
    model_path = os.path.join(os.getenv("AZUREML_MODEL_DIR"), "model/model_lr.joblib")
    model = joblib.load(model_path)
    logging.info("Init complete")


def run(raw_data):
    logging.info("model 1: request received")
    data = json.loads(raw_data)["data"]
    data = numpy.array(data)
    result = model.predict(data)
    logging.info("Request processed")
    return result.tolist()
