"""The naive peer of bench/serve_benchmark.py: the paper's design, one `model.predict` per request.

The paper's Flask page decoded the upload and called Keras' ``model.predict`` on it inside the
request handler. This is that design on the same model file and the same preprocessing, so the
benchmark compares serving designs and nothing else.

    python bench/naive_server.py MODEL_DIR PORT
"""

import json
import sys
from pathlib import Path
from typing import Annotated

# No `from __future__ import annotations`: FastAPI reads these annotations at runtime.
from fastapi import FastAPI, File, UploadFile

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def make_app(version_dir: Path):  # type: ignore[no-untyped-def]
    from shared.ml.modeling import load_model
    from shared.ml.preprocessing import load_pixels, to_model_input

    manifest = json.loads((version_dir / "manifest.json").read_text())
    model = load_model(version_dir / "model.keras")
    app = FastAPI()

    @app.post("/predict")
    def predict(file: Annotated[UploadFile, File()]) -> dict[str, object]:
        batch = to_model_input(load_pixels(file.file.read(), manifest["image_size"]))[None]
        probabilities = model.predict(batch, verbose=0)[0]
        return {"label": manifest["classes"][int(probabilities.argmax())],
                "probabilities": [float(p) for p in probabilities]}

    @app.get("/readyz")
    def ready() -> dict[str, bool]:
        return {"ready": True}

    return app


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(make_app(Path(sys.argv[1])), host="127.0.0.1", port=int(sys.argv[2]),
                log_level="warning")
