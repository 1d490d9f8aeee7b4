"""bench/peer_servers/model.py: the peers' input scaling is the service's."""

from __future__ import annotations

import sys

import numpy as np

from shared.ml.preprocessing import to_model_input
from tests.helpers.env import REPO

PEER_SERVERS = REPO / "bench" / "peer_servers"
if str(PEER_SERVERS) not in sys.path:
    sys.path.append(str(PEER_SERVERS))  # the peers import it as a sibling
from model import model_input  # noqa: E402


def test_the_peers_input_scaling_is_vgg16s_as_the_service_applies_it() -> None:
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 8, 8, 3)).astype(np.float32)
    kept = pixels.copy()
    np.testing.assert_allclose(model_input(pixels), to_model_input(pixels), atol=1e-4)
    np.testing.assert_array_equal(pixels, kept)  # the caller's array is left as it was
