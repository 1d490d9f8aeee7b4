"""PyTriton peer: the published version bound to Triton Inference Server (the binary in the
``nvidia-pytriton`` wheel) with Triton's dynamic batcher.

A request is an Open Inference Protocol (KServe v2) infer call whose one BYTES input holds
the PNG, in the binary tensor data extension as ``tritonclient`` sends it; the answer asks
for the probabilities as binary data too. Triton gathers the requests into batches and
hands each to this process's infer function, which decodes and prepares every image with
the service's own function and runs one forward pass. PyTriton is imported only when the
file serves.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from contract import PeerArgs, PeerRequest, repo_on_path  # noqa: E402

MODEL = "cxr"
INPUT = "image"
OUTPUT = "probabilities"
# where the NumPy 1.x environment for Triton's Python backend stub is (see stub_env)
STUB_ENV_VAR = "BENCH_PYTRITON_STUB_ENV"
STUB_NUMPY = "numpy>=1.21,<2"


class PyTritonPeer:
    name = "pytriton"
    ready_path = f"/v2/models/{MODEL}/ready"
    batching = ("Triton's dynamic batcher: max_batch_size --max-batch, no preferred sizes, "
                "max_queue_delay --batch-delay-ms")

    def command(self, python: str, args: PeerArgs) -> list[str]:
        return [python, str(HERE / "pytriton_peer.py"), *args.argv()]

    def request(self, image: bytes) -> PeerRequest:
        # a BYTES element is its length (uint32, little endian) then its bytes
        tensor = struct.pack("<I", len(image)) + image
        header = json.dumps({
            "inputs": [{"name": INPUT, "shape": [1, 1], "datatype": "BYTES",
                        "parameters": {"binary_data_size": len(tensor)}}],
            "outputs": [{"name": OUTPUT, "parameters": {"binary_data": True}}],
        }).encode()
        return PeerRequest(f"/v2/models/{MODEL}/infer", header + tensor,
                           {"Content-Type": "application/octet-stream",
                            "Inference-Header-Content-Length": str(len(header))})

    def top_class(self, body: bytes) -> int:
        # the JSON header ends where the decoder stops (latin-1 keeps byte offsets)
        head, end = json.JSONDecoder().raw_decode(body.decode("latin-1"))
        output = next(o for o in head["outputs"] if o["name"] == OUTPUT)
        if "data" in output:
            row = [float(v) for v in output["data"]]
        else:
            size = int(output["parameters"]["binary_data_size"])
            row = list(struct.unpack(f"<{size // 4}f", body[end:end + size]))
        return max(range(len(row)), key=row.__getitem__)


PEER = PyTritonPeer()


def use_own_libpython() -> None:
    """Put this interpreter's libpython first for Triton's children. The wheel's Python
    backend stub links ``libpython3.11.so.1.0`` and would find the system's (Debian 3.11.2)
    while it runs this interpreter's standard library (pyenv 3.11.7): the mismatch fails
    its start-up with "'_thread.RLock' object has no attribute '_recursion_count'"."""
    libdir = sysconfig.get_config_var("LIBDIR")
    if sysconfig.get_config_var("Py_ENABLE_SHARED") and libdir:
        paths = [libdir, *filter(None, os.environ.get("LD_LIBRARY_PATH", "").split(":"))]
        os.environ["LD_LIBRARY_PATH"] = ":".join(dict.fromkeys(paths))


def stub_env() -> Path | None:
    """The Python environment for Triton's Python backend stub: None (PyTriton's default,
    this environment) under NumPy 1.x, else a side environment with NumPy 1.x that sees this
    environment's other packages. The stub of Triton 2.45 is built with pybind11 against the
    NumPy 1.x C API; under NumPy 2 the uint8 array it wraps each BYTES input in repeats the
    input's first byte (a 5-byte input's length prefix reads 05 05 05 05), as if its
    strides were 0, and every request fails to deserialize."""
    import numpy as np

    if int(np.__version__.split(".")[0]) < 2:
        return None
    # one per interpreter version and environment: its .pth names this environment's folder
    main_env = hashlib.sha256(sys.prefix.encode()).hexdigest()[:8]
    name = f"pytriton-stub-py{sys.version_info.major}{sys.version_info.minor}-{main_env}"
    env = Path(os.environ.get(STUB_ENV_VAR) or Path.home() / ".cache" / "cxr-bench" / name)
    if not (env / "ready").is_file():
        build_stub_env(env)
    return env


def build_stub_env(env: Path) -> None:
    """A venv without pip holding only NumPy 1.x, its other imports (pytriton, pyzmq, ...)
    from this environment through a .pth file; built aside, then moved in place."""
    work: Path | None = None
    try:
        env.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=env.name + ".", dir=env.parent))
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(work)], check=True)
        site = work / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" \
            / "site-packages"
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                        "--target", str(site), STUB_NUMPY], check=True)
        (site / "zz_main_env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
        (work / "ready").write_text(STUB_NUMPY + "\n")
        os.replace(work, env)
    except (OSError, subprocess.CalledProcessError) as error:
        if (env / "ready").is_file():  # another peer built it meanwhile
            return
        raise SystemExit(
            f"pytriton peer: Triton's Python backend stub needs NumPy 1.x (this environment "
            f"has NumPy 2, whose C ABI the stub cannot read) and the side environment {env} "
            f"could not be built ({error}); build it with {STUB_NUMPY!r} or point "
            f"{STUB_ENV_VAR} at one") from error
    finally:
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)


def serve(args: PeerArgs) -> None:
    repo_on_path()
    import numpy as np

    # PyTriton ships no type information
    import pytriton.server.triton_server as triton_server  # type: ignore[import-untyped]
    from model import load_peer_model
    from pytriton.decorators import batch  # type: ignore[import-untyped]
    from pytriton.model_config import (  # type: ignore[import-untyped]
        DynamicBatcher,
        ModelConfig,
        Tensor,
    )
    from pytriton.triton import Triton, TritonConfig  # type: ignore[import-untyped]

    use_own_libpython()
    side_env = stub_env()  # before the model loads: without it the peer cannot answer
    if side_env is not None:
        # PyTriton runs the stub with the environment this function names (its bin/ on PATH)
        triton_server.get_triton_python_backend_python_env = lambda: side_env
    model = load_peer_model(args.models_dir, args.version, args.runtime, args.threads)

    @batch  # type: ignore[untyped-decorator]
    def infer(**inputs: np.ndarray) -> dict[str, np.ndarray]:
        images = inputs[INPUT].reshape(-1)
        pixels = np.stack([model.prepare(bytes(data)) for data in images])
        return {OUTPUT: model.predict(pixels).astype(np.float32)}

    config = TritonConfig(http_address="127.0.0.1", http_port=args.port,
                          grpc_address="127.0.0.1", grpc_port=args.port + 1,
                          metrics_address="127.0.0.1", metrics_port=args.port + 2,
                          allow_gpu_metrics=False)
    # Triton's dynamic batcher tuned as its "Recommended Configuration Process" says (user
    # guide, "Batchers": docs.nvidia.com/deeplearning/triton-inference-server/user-guide/docs/
    # batcher.html): a max batch size, no preferred sizes, then a queue delay that lets
    # batches fill, here args.batch_delay_ms like every peer's
    batching = ModelConfig(max_batch_size=args.max_batch, batcher=DynamicBatcher(
        max_queue_delay_microseconds=int(args.batch_delay_ms * 1000)))
    # SIGTERM stops like SIGINT: Triton.serve() stops the server and its stub on either
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with Triton(config=config) as triton:
        triton.bind(model_name=MODEL, infer_func=infer,
                    inputs=[Tensor(name=INPUT, dtype=bytes, shape=(1,))],
                    outputs=[Tensor(name=OUTPUT, dtype=np.float32, shape=(-1,))],
                    config=batching, strict=True)
        triton.serve()


def main() -> None:
    serve(PeerArgs.parse())


if __name__ == "__main__":
    main()
