"""The floor of bench/serving.py (perf-anchors Appendix A `fastapi_orjson_app.py`): FastAPI, orjson
parsing and serialisation, model.predict called inline. Run with uvicorn (uvloop + httptools), 1 worker:

    MODEL_FILE=model/model_lr.joblib uvicorn floor_app:app --app-dir bench/serving --loop uvloop --http httptools
"""

import os

import joblib
import numpy as np
import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response

model = joblib.load(os.environ["MODEL_FILE"])
app = FastAPI()


@app.post("/score")
async def score(request: Request):
    X = np.asarray(orjson.loads(await request.body())["data"], dtype=np.float64)
    return Response(orjson.dumps(model.predict(X), option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json")
