"""LitServe serving the published version: ``POST /predict`` with the image as the multipart
part ``file`` (as the service's own /predict takes it), answered with ``{"probabilities":
[...]}`` in the manifest's class order.

Batching is LitServe's own: the API server process queues requests for one inference worker
process, which gathers up to ``max_batch_size`` of them, waiting at most ``batch_timeout``
seconds for the batch to fill (``PeerArgs.max_batch`` and ``batch_delay_ms``).
``decode_request`` runs the service's decode and preparation per request, LitServe stacks
the prepared images, ``predict`` runs one forward pass on the batch and ``unbatch`` splits it.
One worker on CPU (``accelerator="cpu"``, ``workers_per_device=1``) and one API server, as
LitServe's documentation sets a CPU model up: a second worker would hold a second model on
the same two cores.

    .venv/bin/python bench/peer_servers/litserve_peer.py --models-dir DIR --version V --port P
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from contract import PeerArgs, PeerRequest, multipart_request, repo_on_path


class LitServePeer:
    name = "litserve"
    ready_path = "/health"  # 200 once every worker's setup (the model's load) is done
    batching = ("LitServe's: up to --max-batch requests per forward pass, waiting at most "
                "--batch-delay-ms (batch_timeout) to fill; 1 inference worker, 1 API server")

    def command(self, python: str, args: PeerArgs) -> list[str]:
        return [python, __file__, *args.argv()]

    def request(self, image: bytes) -> PeerRequest:
        return multipart_request(image)

    def top_class(self, body: bytes) -> int:
        return int(np.argmax(json.loads(body)["probabilities"]))


PEER = LitServePeer()


if __name__ in ("__main__", "__mp_main__"):
    # LitServe starts its worker with multiprocessing's spawn, which pickles the API object
    # and imports this file again in the child as __mp_main__: the class must be defined at
    # the top level there too, and litserve imported only when serving.
    repo_on_path()
    import litserve as ls  # type: ignore[import-untyped]

    class CxrAPI(ls.LitAPI):  # type: ignore[misc]
        def __init__(self, args: PeerArgs) -> None:
            super().__init__(max_batch_size=args.max_batch,
                             batch_timeout=args.batch_delay_ms / 1000)
            self.args = args

        def setup(self, device: str) -> None:
            from model import load_peer_model

            self.model = load_peer_model(self.args.models_dir, self.args.version,
                                         self.args.runtime, self.args.threads)

        # No annotation on ``request``: LitServe reads it as the route's parameter type, and
        # only an absent one (or starlette's Request) gives the body, parsed as a form.
        def decode_request(self, request, **kwargs: Any) -> np.ndarray:  # type: ignore[no-untyped-def]
            return self.model.prepare(request["file"].file.read())

        def predict(self, x: Any, **kwargs: Any) -> np.ndarray:
            # A batch: the prepared images stacked (LitAPI.batch stacks numpy arrays); one
            # image alone where max_batch_size is 1 (LitServe then neither batches nor splits).
            x = np.asarray(x)
            return self.model.predict(x) if x.ndim == 4 else self.model.predict(x[None])[0]

        def unbatch(self, output: Any) -> list[np.ndarray]:
            return list(output)

        def encode_response(self, output: Any, **kwargs: Any) -> dict[str, list[float]]:
            return {"probabilities": np.asarray(output, np.float64).tolist()}


def serve(args: PeerArgs) -> None:
    server = ls.LitServer(CxrAPI(args), accelerator="cpu", devices=1, workers_per_device=1,
                          timeout=120)
    server.run(port=args.port, host="127.0.0.1", num_api_servers=1, log_level="warning",
               generate_client_file=False)


if __name__ == "__main__":
    serve(PeerArgs.parse())
