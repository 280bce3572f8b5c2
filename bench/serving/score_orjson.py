# score.py with one change: the raw body is parsed with orjson instead of the standard library's json
# (perf-anchors §4.3 item 1: json.loads is most of a 1000-row request). Same model, same answer.
import logging
import os

import joblib
import numpy
import orjson


def init():
    global model
    model_path = os.path.join(os.getenv("AZUREML_MODEL_DIR"), "model/model_lr.joblib")
    model = joblib.load(model_path)
    logging.info("Init complete")


def run(raw_data):
    logging.info("model 1: request received")
    data = orjson.loads(raw_data)["data"]
    data = numpy.array(data)
    result = model.predict(data)
    logging.info("Request processed")
    return result.tolist()
