"""Dataset discovery on disk and safe unpacking of uploaded zip archives.

Two layouts are recognised, both with labels taken from folder names (sorted):
- class folders: ``<root>/<Class>/*.png|jpg``;
- the COVID-19 Radiography Database as downloaded: ``<root>/<Class>/images/*.png``
  (``masks/`` ignored; class names may contain spaces, e.g. ``Viral Pneumonia``).

A zip may hold DICOM files (recognised by content) in place of images: each is stored as
the PNG of its pixels, with no header and a name of its own (``_dicom_as_png``). Every other
image member is decoded as the jobs will read it before it is kept (``_check_member``), so a
stored dataset has no image that a job would fail on.
"""

from __future__ import annotations

import hashlib
import io
import re
import shutil
import stat
import uuid
import zipfile
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

from shared.config import DEFAULT_MAX_IMAGE_PIXELS
from shared.errors import (
    ClassMismatch,
    CxrError,
    DatasetExists,
    DatasetNotFound,
    ImageTooLarge,
    InvalidDataset,
    StorageFull,
    is_out_of_space,
)
from shared.ml.dicom import decode_dicom, is_dicom
from shared.ml.preprocessing import decode_image
from shared.schemas import DatasetInfo

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg"})
# Metadata that may sit at a dataset's root (provenance, patient-id tables, notes).
ROOT_METADATA_SUFFIXES = frozenset({".csv", ".txt", ".md", ".json"})
IGNORED_NAMES = frozenset({"__MACOSX", ".DS_Store", "Thumbs.db", "desktop.ini"})
RADIOGRAPHY_LAYOUT = "covid19-radiography"
CLASS_FOLDER_LAYOUT = "class-folders"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class Dataset:
    """A discovered dataset: its labels in order and the image files of each."""

    root: Path
    layout: str
    files: dict[str, list[Path]]
    # The dataset each image came from, when several were combined (``combine``).
    sources: dict[Path, str] = field(default_factory=dict, compare=False)

    @property
    def classes(self) -> list[str]:
        return list(self.files)

    def info(self, name: str) -> DatasetInfo:
        counts = {label: len(paths) for label, paths in self.files.items()}
        return DatasetInfo(
            name=name, classes=counts, images=sum(counts.values()), layout=self.layout
        )

    def fingerprint(self) -> str:
        """sha256 over every (label, file name, content hash), independent of the folder."""
        return self._fingerprint

    @cached_property
    def _fingerprint(self) -> str:
        # Reads every file: computed once per discovered dataset (checkpoint key, manifest).
        digest = hashlib.sha256()
        for label, paths in self.files.items():
            for path in paths:
                source = f"{self.sources[path]}:" if self.sources else ""
                digest.update(f"{source}{label}/{path.name}:".encode())
                digest.update(hashlib.sha256(path.read_bytes()).digest())
        return digest.hexdigest()


def _class_key(label: str) -> str:
    """Names match across spelling conventions: 'VIRAL_PNEUMONIA' is 'Viral Pneumonia'."""
    return re.sub(r"[\s_-]+", " ", label).strip().casefold()


def match_classes(dataset_classes: list[str], model_classes: list[str],
                  dataset_name: str | None = None) -> dict[str, int]:
    """Each dataset class's index among the model's classes; an unknown class is an error,
    which names the dataset when given its name."""
    index = {_class_key(label): i for i, label in enumerate(model_classes)}
    unknown = [label for label in dataset_classes if _class_key(label) not in index]
    if unknown:
        whose = f"dataset {dataset_name!r}: " if dataset_name else ""
        raise InvalidDataset(f"{whose}classes {unknown} are not among {model_classes}")
    return {label: index[_class_key(label)] for label in dataset_classes}


def same_classes(dataset_classes: list[str], model_classes: list[str],
                 dataset_name: str) -> dict[str, int]:
    """``match_classes`` for a fine-tune: the dataset must hold every class of the version as
    well, since films of one class teach a site's look, not its disease (ClassMismatch)."""
    keys = {_class_key(label) for label in dataset_classes}
    missing = [label for label in model_classes if _class_key(label) not in keys]
    unknown = [label for label in dataset_classes
               if _class_key(label) not in {_class_key(c) for c in model_classes}]
    if missing or unknown:
        why = (f"; it lacks {missing}: a fine-tune needs films of every class, as films of "
               "one class teach the site's look, not the disease" if missing else "")
        raise ClassMismatch(f"dataset {dataset_name!r} has classes {dataset_classes}, the "
                            f"version {model_classes}{why}")
    return match_classes(dataset_classes, model_classes, dataset_name)


def aligned(dataset: Dataset, classes: list[str], dataset_name: str) -> Dataset:
    """The dataset with the version's classes, in its order and spelling, so that label i is
    the version's output i."""
    mapping = same_classes(dataset.classes, classes, dataset_name)
    by_index = {index: label for label, index in mapping.items()}
    return replace(dataset, files={classes[i]: dataset.files[by_index[i]]
                                   for i in range(len(classes))})


def combine(parts: list[tuple[str, Dataset]]) -> Dataset:
    """Several named datasets trained on as one: classes matched by name and spelled as in
    the first, every image's source recorded. A class only a later one has is an error."""
    names = [name for name, _ in parts]
    if len(set(names)) != len(names):
        raise InvalidDataset(f"a dataset is named twice in {names}")
    (first_name, first), *others = parts
    if not others:
        return first
    files = {label: list(paths) for label, paths in first.files.items()}
    sources = {path: first_name for paths in first.files.values() for path in paths}
    for name, other in others:
        mapping = match_classes(other.classes, first.classes, name)
        for label, paths in other.files.items():
            files[first.classes[mapping[label]]] += paths
            sources.update(dict.fromkeys(paths, name))
    return Dataset(root=first.root, layout="combined", files=files, sources=sources)


def _visible_dirs(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.iterdir()
        if p.is_dir() and not p.name.startswith(".") and p.name not in IGNORED_NAMES
    )


def _images_in(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    )


def discover(root: Path, min_classes: int = 2) -> Dataset:
    """Find the classes and image files of a dataset folder in either layout. Training needs
    two classes; an evaluation set (another hospital's COVID films, say) may have one."""
    if not root.is_dir():
        raise DatasetNotFound(f"no dataset folder at {root.name!r}")
    subdirs = _visible_dirs(root)
    # A zip of a folder wraps the dataset in one more level: look inside it.
    only = subdirs[0] if len(subdirs) == 1 else None
    if only and not (only / "images").is_dir() and not _images_in(only) and _visible_dirs(only):
        return discover(only, min_classes)
    files: dict[str, list[Path]] = {}
    layouts = set()
    for class_dir in subdirs:
        images_dir = class_dir / "images"
        if images_dir.is_dir():
            layouts.add(RADIOGRAPHY_LAYOUT)
            found = _images_in(images_dir)
        else:
            layouts.add(CLASS_FOLDER_LAYOUT)
            found = _images_in(class_dir)
        if found:
            files[class_dir.name] = found
    if len(layouts) > 1:
        raise InvalidDataset("mixed layouts: use <Class>/*.png or <Class>/images/*.png throughout")
    if len(files) < min_classes:
        raise InvalidDataset(
            f"found {len(files)} class folder(s) with images; "
            + ("a dataset needs one or more" if min_classes == 1 else
               f"training needs at least {min_classes}")
            + " (<Class>/*.png or <Class>/images/*.png)"
        )
    return Dataset(root=root, layout=layouts.pop(), files=files)


def dataset_path(data_dir: Path, name: str) -> Path:
    """The folder of a named dataset; the name was validated against NAME_PATTERN."""
    return data_dir / name


def list_datasets(data_dir: Path) -> list[DatasetInfo]:
    """Every valid dataset under ``data_dir``, by name."""
    if not data_dir.is_dir():
        return []
    infos = []
    for folder in _visible_dirs(data_dir):
        try:
            infos.append(discover(folder, min_classes=1).info(folder.name))
        except (InvalidDataset, DatasetNotFound):
            continue
    return infos


@dataclass(frozen=True)
class ZipLimits:
    max_members: int
    max_uncompressed_bytes: int
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS  # of any image member, as jobs read it
    max_compression_ratio: float = 100.0  # of any one member: zip bombs


def _member_path(info: zipfile.ZipInfo) -> PurePosixPath | None:
    """The member's safe relative path, None for ignorable entries; raises for hostile ones."""
    name = info.filename
    mode = info.external_attr >> 16  # Unix mode when the archiver recorded one
    if stat.S_ISLNK(mode):
        raise InvalidDataset(f"zip member {name!r} is a symbolic link")
    if stat.S_IFMT(mode) and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise InvalidDataset(f"zip member {name!r} is not a regular file")
    if info.flag_bits & 0x1:
        raise InvalidDataset(f"zip member {name!r} is encrypted")
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or (path.parts and ":" in path.parts[0]):
        raise InvalidDataset(f"zip member {name!r} would escape the dataset folder")
    if any(part in IGNORED_NAMES or part.startswith(".") for part in path.parts):
        return None
    return path


def _check_member(name: str, path: PurePosixPath, data: bytes, max_pixels: int) -> None:
    """Metadata at the root, or an image that decodes whole as the jobs will read it
    (``decode_image``, within the pixel limit); the refusal names the member."""
    suffix = path.suffix.lower()
    if suffix in ROOT_METADATA_SUFFIXES and len(path.parts) <= 2:
        return
    if suffix not in IMAGE_SUFFIXES:
        raise InvalidDataset(f"zip member {_shown(name)} is not a PNG or JPEG image")
    # A PNG is decoded alike whatever the floor, and floor 1 makes no full-size float copy
    # for the check to throw away; a JPEG at full scale, as a job reads it by default.
    floor = 1 if data.startswith(PNG_SIGNATURE) else 0
    try:
        decode_image(data, max_pixels, floor)
    except ImageTooLarge as exc:  # a decompression bomb among them
        raise ImageTooLarge(f"zip member {_shown(name)}: {exc.message}") from exc
    except CxrError as exc:
        raise InvalidDataset(f"zip member {_shown(name)} is not an image the jobs can read: "
                             f"{exc.message}") from exc


def _dicom_as_png(path: PurePosixPath, data: bytes,
                  max_pixels: int) -> tuple[PurePosixPath, bytes]:
    """A DICOM member kept as pixels only: an 8-bit PNG of its display values, named by the
    hash of those pixels (a DICOM's file name often carries patient names or ids)."""
    try:
        gray = decode_dicom(data, max_pixels)
    except ImageTooLarge as exc:
        raise ImageTooLarge(f"a DICOM member of {str(path.parent)!r}: {exc.message}") from exc
    except CxrError as exc:
        raise InvalidDataset(f"a DICOM member of {str(path.parent)!r}: {exc.message}") from exc
    pixels = np.rint(gray).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buffer, format="PNG")
    name = hashlib.sha256(pixels.tobytes()).hexdigest()[:20] + ".png"
    return path.parent / name, buffer.getvalue()


def _shown(name: str, limit: int = 120) -> str:
    """A member's name for a message: quoted, and cut short when it is very long."""
    return repr(name) if len(name) <= limit else f"{name[:limit]!r}... ({len(name)} characters)"


def _extract(archive: zipfile.ZipFile, target: Path, limits: ZipLimits) -> None:
    members = archive.infolist()
    if len(members) > limits.max_members:
        raise InvalidDataset(
            f"the zip has {len(members)} members; the limit is {limits.max_members}")
    if sum(m.file_size for m in members) > limits.max_uncompressed_bytes:
        raise InvalidDataset("the zip unpacks to more than the size limit")
    written = 0
    for info in members:
        path = _member_path(info)
        if path is None or info.is_dir():
            continue
        if info.file_size > limits.max_compression_ratio * max(info.compress_size, 1):
            raise InvalidDataset(f"zip member {info.filename!r} inflates more than "
                                 f"{limits.max_compression_ratio:g} times")
        # Read at most one byte past the declared size: a lying header cannot inflate us.
        with archive.open(info) as stream:
            data = stream.read(info.file_size + 1)
        written += len(data)
        if len(data) > info.file_size or written > limits.max_uncompressed_bytes:
            raise InvalidDataset(f"zip member {info.filename!r} is larger than declared")
        from_dicom = is_dicom(data)
        if from_dicom:
            path, data = _dicom_as_png(path, data, limits.max_image_pixels)
        else:
            _check_member(info.filename, path, data, limits.max_image_pixels)
        destination = target.joinpath(*path.parts)
        if from_dicom and destination.exists():
            continue  # the same pixels twice in one class folder: kept once
        try:
            destination.parent.mkdir(parents=True, exist_ok=True)
            destination.write_bytes(data)
        except OSError as exc:  # a name too long, a file where a folder goes, or the reverse
            if is_out_of_space(exc):
                raise
            raise InvalidDataset(f"zip member {_shown(info.filename)} cannot be stored here: "
                                 f"{exc.strerror or type(exc).__name__}") from exc


def unpack_zip(archive_path: Path, data_dir: Path, name: str, limits: ZipLimits) -> DatasetInfo:
    """Unpack an uploaded zip into ``data_dir/name``: all or nothing."""
    if name.lower() in {ignored.lower() for ignored in IGNORED_NAMES}:
        # a folder of that name is an operating system's litter: it would never be listed
        raise InvalidDataset(f"{name!r} is a name operating systems use for their own files; "
                             "choose another")
    final = dataset_path(data_dir, name)
    if final.exists():
        raise DatasetExists(f"dataset {name!r} already exists")
    data_dir.mkdir(parents=True, exist_ok=True)
    staging = data_dir / f".staging-{uuid.uuid4().hex}"
    staging.mkdir()
    try:
        try:
            with zipfile.ZipFile(archive_path) as archive:
                _extract(archive, staging, limits)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError) as exc:
            raise InvalidDataset(f"not a readable zip archive: {exc}") from exc
        except OSError as exc:
            if is_out_of_space(exc):
                raise StorageFull(f"the data folder ran out of space unpacking {name!r}; "
                                  "nothing was kept") from exc
            raise
        discover(staging, min_classes=1)
        try:
            staging.rename(final)
        except OSError as exc:
            raise DatasetExists(f"dataset {name!r} already exists") from exc
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return discover(final, min_classes=1).info(name)
