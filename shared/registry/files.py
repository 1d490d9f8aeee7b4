"""The files of a version folder, named once: the worker writes them, the registry seals
them with their sha256 in the manifest, and every reader asks for them by these names."""

from __future__ import annotations

MODEL_FILE = "model.keras"
MANIFEST_FILE = "manifest.json"  # written last: its presence is the commit
ONNX_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
SHIFT_FILE = "shift.npz"
GATE_FILE = "xray_gate.npz"
CURVES_FILE = "curves.png"
RELIABILITY_FILE = "reliability.png"
CARD_MD = "card.md"
CARD_HTML = "card.html"
