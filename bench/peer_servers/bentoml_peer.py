"""BentoML peer: the published version behind one BentoML service with adaptive batching.

A request is one PNG as a multipart file (``images``, a list of one), as BentoML's docs
advise for files (``pathlib.Path`` inputs); the service decodes and prepares each file with
the service's own function and runs one batched forward pass for all the requests its
dispatcher gathered. BentoML is imported only when the file serves.
"""

import json
import os
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from contract import PeerArgs, PeerRequest, multipart_request, repo_on_path  # noqa: E402

# the workers read the arguments from here: BentoML imports the service again in each one
ARGS_ENV = "CXR_BENTOML_PEER_ARGS"
SERVICE_NAME = "BentoPeer"
# BentoML's max_latency_ms is the latency bound past which its dispatcher answers 503, not
# a batch window: its adaptive dispatcher picks the wait itself ("Adaptive batching",
# docs.bentoml.com/en/latest/guides/adaptive-batching.html), so the bound is the service's
# latency requirement and args.batch_delay_ms has no BentoML equivalent.
LATENCY_BOUND_MS = 10_000


class BentoMLPeer:
    name = "bentoml"
    ready_path = "/readyz"
    batching = ("BentoML's adaptive batching: up to --max-batch requests per forward pass, "
                "the wait chosen by its dispatcher (max_latency_ms is a 503 bound, 10 s here)")

    def command(self, python: str, args: PeerArgs) -> list[str]:
        return [python, str(HERE / "bentoml_peer.py"), *args.argv()]

    def request(self, image: bytes) -> PeerRequest:
        # the file part of the list input ``images``: a list of one image
        return multipart_request(image, "/predict", field="images")

    def top_class(self, body: bytes) -> int:
        row = json.loads(body)[0]
        return max(range(len(row)), key=row.__getitem__)


PEER = BentoMLPeer()


def build_service(args: PeerArgs) -> Any:
    """The BentoML service serving ``args``: one worker, whose forward pass gets the batches."""
    repo_on_path()
    import bentoml
    import numpy as np
    from model import load_peer_model

    @bentoml.service(name="cxr-bentoml-peer", workers=1, traffic={"timeout": 60})
    class BentoPeer:
        def __init__(self) -> None:
            self.model = load_peer_model(args.models_dir, args.version, args.runtime,
                                         args.threads)

        @bentoml.api(  # type: ignore[untyped-decorator]
            batchable=True, max_batch_size=args.max_batch, max_latency_ms=LATENCY_BOUND_MS)
        def predict(self, images: list[Path]) -> np.ndarray:
            pixels = np.stack([self.model.prepare(path.read_bytes()) for path in images])
            return self.model.predict(pixels)

    return BentoPeer


def __getattr__(name: str) -> Any:
    # how a BentoML worker finds the service: it imports this module and asks for the name
    if name == SERVICE_NAME and ARGS_ENV in os.environ:
        service = build_service(PeerArgs.parse(json.loads(os.environ[ARGS_ENV])))
        globals()[SERVICE_NAME] = service
        return service
    raise AttributeError(name)


def main() -> None:
    args = PeerArgs.parse()
    args = PeerArgs(args.models_dir.resolve(), args.version, args.runtime, args.port,
                    args.max_batch, args.batch_delay_ms, args.threads)
    os.environ[ARGS_ENV] = json.dumps(args.argv())
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")
    # a worker imports the service by its import string, relative to the working directory:
    # from this folder it is bentoml_peer:BentoPeer whichever folder the peer started in
    os.chdir(HERE)
    service = build_service(args)
    globals()[SERVICE_NAME] = service
    # blocks until SIGTERM/SIGINT, on which BentoML's process manager stops its worker
    service.serve_http(host="127.0.0.1", port=args.port)


if __name__ == "__main__":
    main()
