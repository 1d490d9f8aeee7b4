"""Reading a DICOM file's header without its pixels, and finding where the pixels lie.

A deflated file is inflated only as far as it is read (``_Inflating``), never past the
header limit, then no further than the header's pixels need.
"""

from __future__ import annotations

import io
import math
import struct
import warnings
import zlib
from dataclasses import dataclass
from typing import Any

from shared.errors import CxrError, InvalidImage

DEFLATED = "1.2.840.10008.1.2.1.99"
PIXEL_DATA = 0x7FE00010
UNDEFINED_LENGTH = 0xFFFFFFFF
# What a deflated file may inflate to besides its pixels: the elements before them (a real
# radiograph's take kilobytes) and after them (padding, signatures).
HEADER_LIMIT = 4 * 2**20
TRAILER_SLACK = 2**20


@dataclass(frozen=True)
class DicomHeader:
    """A DICOM file's elements before its pixel data, and where its pixel data lies."""

    ds: Any  # a pydicom Dataset without the pixel data, with its file_meta
    inflating: _Inflating | None  # a deflated file's dataset, inflated as far as read
    pixels_at: int  # offset of the Pixel Data value in the file (or inflated dataset); 0: none
    pixels_length: int  # its declared length, UNDEFINED_LENGTH when encapsulated

    @property
    def syntax(self) -> Any:
        return self.ds.file_meta.TransferSyntaxUID

    @property
    def encapsulated(self) -> bool:
        return self.pixels_length == UNDEFINED_LENGTH

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.ds.get("Rows", 0) or 0), int(self.ds.get("Columns", 0) or 0)

    def stored_bytes(self) -> int:
        """Bytes of the stored pixels the header describes (one frame, one sample)."""
        rows, columns = self.shape
        return math.ceil(rows * columns * int(self.ds.BitsAllocated) / 8)


def read_header(data: bytes) -> DicomHeader:
    """The elements before the pixel data, read without reading (or inflating) the pixels."""
    from pydicom.filereader import _read_file_meta_info, read_dataset, read_preamble

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            stream: Any = io.BytesIO(data)
            read_preamble(stream, False)
            meta = _read_file_meta_info(stream)
            if "TransferSyntaxUID" not in meta:  # mandatory in a Part 10 file
                raise InvalidImage("the DICOM file's meta header is incomplete")
            inflating = None
            if meta.TransferSyntaxUID == DEFLATED:
                # Inflated as far as pydicom reads, never past the header limit: pydicom's
                # own reading would inflate all of it at once, however large.
                stream = inflating = _Inflating(memoryview(data)[stream.tell():], HEADER_LIMIT)
            implicit, little = _encoding(meta.TransferSyntaxUID)
            ds = read_dataset(stream, implicit, little, stop_when=_at_pixel_data)
            ds.file_meta = meta
            at = stream.tell()
            offset, length = _pixel_element(stream.read(12), implicit, little)
    except CxrError:
        raise
    except Exception as exc:  # pydicom fails in many ways on a damaged file (unknown VRs,
        # wrong lengths, truncation); its messages may quote element values: name the
        # failure, not the content.
        raise InvalidImage(f"the DICOM file could not be read ({type(exc).__name__})") from exc
    if any("End of file reached" in str(w.message) for w in caught):
        raise InvalidImage("the DICOM file is truncated")
    return DicomHeader(ds, inflating, at + offset if offset else 0, length)


def _encoding(syntax: Any) -> tuple[bool, bool]:
    """(implicit VR, little endian); pydicom reads a syntax it does not know as explicit VR
    little endian, as the encapsulated ones are."""
    try:
        return bool(syntax.is_implicit_VR), bool(syntax.is_little_endian)
    except ValueError:
        return False, True


def _at_pixel_data(tag: Any, vr: str | None, length: int) -> bool:
    return int(tag) in (PIXEL_DATA, 0x7FE00008, 0x7FE00009)  # and float pixel data


def _pixel_element(element: bytes, implicit: bool, little: bool) -> tuple[int, int]:
    """(offset of the value, its length) from a Pixel Data element's start; (0, 0) for any
    other element or none (float pixel data is not a radiograph's)."""
    order = "<" if little else ">"
    if len(element) < 12 or struct.unpack_from(f"{order}HH", element) != (0x7FE0, 0x0010):
        return 0, 0
    if implicit:
        return 8, int(struct.unpack_from(f"{order}L", element, 4)[0])
    return 12, int(struct.unpack_from(f"{order}L", element, 8)[0])  # OB, OW: 4-byte length


class _Inflating:
    """A deflated dataset as a file-like that inflates only as far as it is read, and never
    past ``limit`` bytes."""

    CHUNK = 2**16

    def __init__(self, deflated: memoryview, limit: int) -> None:
        self._zlib = zlib.decompressobj(-zlib.MAX_WBITS)
        self._input, self._fed = deflated, 0
        self.limit = limit
        self.buffer = bytearray()
        self._position = 0

    def read(self, size: int | None = -1) -> bytes:
        end = self.limit + 1 if size is None or size < 0 else self._position + size
        self.inflate_to(end)
        chunk = bytes(self.buffer[self._position:end])
        self._position += len(chunk)
        return chunk

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_CUR:
            offset += self._position
        elif whence != io.SEEK_SET:
            raise OSError("an inflating stream seeks from its start or its position only")
        self._position = max(0, offset)
        return self._position

    def tell(self) -> int:
        return self._position

    def inflate_to(self, end: int) -> None:
        """Inflate until ``end`` bytes are out or the stream ends; refused past the limit."""
        while len(self.buffer) < end and not self._zlib.eof:
            room = self.limit + 1 - len(self.buffer)
            if room <= 0:
                raise InvalidImage(f"the deflated DICOM inflates to more than the {self.limit} "
                                   "bytes its header allows")
            tail: bytes | memoryview = self._zlib.unconsumed_tail
            if not tail:
                if self._fed >= len(self._input):  # the deflate stream did not end
                    raise InvalidImage("the DICOM file is truncated")
                tail = self._input[self._fed:self._fed + self.CHUNK]
                self._fed += len(tail)
            try:  # a chunk out at a time: a deflate stream may expand a thousandfold
                self.buffer += self._zlib.decompress(tail, min(room, 16 * self.CHUNK))
            except zlib.error as exc:
                raise InvalidImage("the deflated DICOM's data is damaged") from exc

    def inflate_all(self, limit: int) -> memoryview:
        """The whole dataset, refused if it inflates to more than ``limit`` bytes."""
        self.limit = limit
        self.inflate_to(limit + 1)
        if len(self.buffer) > limit:
            raise InvalidImage(f"the deflated DICOM inflates to more than the {limit} bytes "
                               "its header's pixels need")
        return memoryview(self.buffer)


def pixel_source(header: DicomHeader, data: bytes) -> memoryview | io.BytesIO:
    """The Pixel Data value where it lies: native pixels as a view of the file, or of the
    dataset inflated no further than the header's pixels need; encapsulated ones as the file
    at their start (pydicom would copy a view of them)."""
    if header.encapsulated:
        if header.inflating is not None:
            raise InvalidImage("the deflated DICOM's pixel data is encapsulated")
        stream = io.BytesIO(data)  # shares the bytes until written to
        stream.seek(header.pixels_at)
        return stream
    if header.inflating is not None:
        dataset = header.inflating.inflate_all(inflated_bytes(header))
    else:
        dataset = memoryview(data)
    end = header.pixels_at + header.pixels_length
    if end > len(dataset):
        raise InvalidImage("the DICOM file is truncated")
    return dataset[header.pixels_at:end]


def inflated_bytes(header: DicomHeader) -> int:
    """The most a deflated dataset may inflate to: what precedes the pixels, the stored
    pixels with a padding byte, and the elements that may follow them."""
    return header.pixels_at + header.stored_bytes() + 1 + TRAILER_SLACK

