"""Which of pydicom's decoding plugins decodes a compressed frame."""

from __future__ import annotations

from typing import Any

# Asked for in this order, where a syntax has several. GDCM comes last, and only where nothing
# else decodes the syntax (JPEG lossless, JPEG-LS): on a damaged JPEG it can throw a C++
# exception that aborts the whole process. pylibjpeg-rle writes no more than the header's
# pixels, where pydicom's own RLE decoder decodes a segment however long it is.
PLUGINS = ("pylibjpeg", "pillow")


def plugin_for(syntax: Any) -> str:
    """The plugin to ask for ("": pydicom's own choice, where none of PLUGINS can)."""
    from pydicom.pixels.decoders.base import get_decoder

    available = get_decoder(syntax).available_plugins
    return next((name for name in PLUGINS if name in available), "")
