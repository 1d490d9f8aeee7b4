"""KServe's Python model server (``kserve.ModelServer``) serving the published version on the
Open Inference Protocol: ``POST /v2/models/cxr/infer`` with a BYTES input IMAGE holding the
encoded image, answered with PROBABILITIES (FP32, [n, classes]).

The image travels base64 in the JSON. KServe parses the binary tensor data extension, but
it turns every BYTES element into a UTF-8 string before the model sees it
(``InferRequest.from_bytes`` -> ``set_data_from_numpy(binary_data=False)``), which refuses
PNG bytes: binary BYTES inputs only carry text there.

Batching: none in process. KServe's batcher is the Go model agent that Kubernetes injects
beside the model server as a sidecar (``spec.predictor.batcher``), for its v1 protocol only;
nothing of it ships in the Python package. So the server runs as KServe's custom-model
examples write it: a synchronous ``predict`` that KServe calls on its event loop, one request
at a time, in one uvicorn worker (``--workers`` would start more processes, each with its own
copy of the model, on the same two cores). ``PeerArgs.max_batch`` and ``batch_delay_ms`` are
not used.

    .venv/bin/python bench/peer_servers/kserve_peer.py --models-dir DIR --version V --port P
"""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np
from contract import PeerArgs, PeerRequest, repo_on_path

MODEL = "cxr"
INPUT, OUTPUT = "IMAGE", "PROBABILITIES"


class KServePeer:
    name = "kserve"
    ready_path = f"/v2/models/{MODEL}/ready"
    batching = ("none: KServe's batcher is its Kubernetes sidecar agent (v1 protocol only); "
                "one request at a time, predict on the event loop, 1 uvicorn worker")

    def command(self, python: str, args: PeerArgs) -> list[str]:
        return [python, __file__, *args.argv()]

    def request(self, image: bytes) -> PeerRequest:
        body = {"inputs": [{"name": INPUT, "shape": [1], "datatype": "BYTES",
                            "data": [base64.b64encode(image).decode()]}]}
        return PeerRequest(f"/v2/models/{MODEL}/infer", json.dumps(body).encode(),
                           {"content-type": "application/json"})

    def top_class(self, body: bytes) -> int:
        output = next(o for o in json.loads(body)["outputs"] if o["name"] == OUTPUT)
        probabilities = np.asarray(output["data"], np.float32).reshape(output["shape"])
        if probabilities.shape[0] != 1:
            raise ValueError(f"{probabilities.shape[0]} answers to one image")
        return int(probabilities[0].argmax())


PEER = KServePeer()


def serve(args: PeerArgs) -> None:
    repo_on_path()
    import kserve  # type: ignore[import-untyped]
    from kserve import InferOutput, InferRequest, InferResponse
    from model import load_peer_model

    peer_model = load_peer_model(args.models_dir, args.version, args.runtime, args.threads)

    class CxrModel(kserve.Model):  # type: ignore[misc]
        def load(self) -> bool:
            self.ready = True
            return True

        def predict(self, payload: InferRequest, headers: dict[str, str] | None = None,
                    response_headers: dict[str, str] | None = None) -> InferResponse:
            images = [base64.b64decode(value) for value in payload.inputs[0].data]
            pixels = np.stack([peer_model.prepare(image) for image in images])
            probabilities = peer_model.predict(pixels).astype(np.float32)
            output = InferOutput(OUTPUT, list(probabilities.shape), "FP32")
            output.set_data_from_numpy(probabilities, binary_data=False)
            return InferResponse(model_name=self.name, infer_outputs=[output],
                                 response_id=payload.id or "")

    model: Any = CxrModel(MODEL)
    model.load()
    # No gRPC port and no per-request latency log line: only the REST route is measured.
    kserve.ModelServer(http_port=args.port, workers=1, enable_grpc=False,
                       enable_latency_logging=False).start([model])


if __name__ == "__main__":
    serve(PeerArgs.parse())
