"""Dataset discovery in both layouts and all-or-nothing unpacking of hostile zip uploads."""

from __future__ import annotations

import io
import shutil
import stat
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shared.datasets import (
    CLASS_FOLDER_LAYOUT,
    RADIOGRAPHY_LAYOUT,
    Dataset,
    ZipLimits,
    combine,
    discover,
    list_datasets,
    match_classes,
    unpack_zip,
)
from shared.errors import (
    DatasetExists,
    DatasetNotFound,
    ImageTooLarge,
    InvalidDataset,
    StorageFull,
)
from shared.schemas import DatasetInfo
from tests.helpers.dicom import make_dicom
from tests.helpers.env import sample_files
from tests.helpers.images import png_declaring
from tests.helpers.services import SmallDisk

LIMITS = ZipLimits(max_members=1000, max_uncompressed_bytes=64 * 1024 * 1024)
RADIOGRAPHY_COUNTS = {"COVID": 1200, "Normal": 1200, "Viral Pneumonia": 1338}


def _png(shade: int = 128, size: tuple[int, int] = (8, 8)) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", size, shade).save(buffer, "PNG")
    return buffer.getvalue()


def _regular(name: str) -> zipfile.ZipInfo:
    """A member as Info-ZIP on Unix writes it: a regular file with rw-r--r--."""
    info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
    info.external_attr = (stat.S_IFREG | 0o644) << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    return info


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(_regular(name), data)
    return path


def _valid_members(prefix: str = "") -> dict[str, bytes]:
    return {f"{prefix}{label}/{i}.png": _png(40 * i + 10)
            for label in ("COVID", "Normal") for i in range(3)}


def _leftovers(data_dir: Path) -> list[str]:
    return sorted(p.name for p in data_dir.iterdir()) if data_dir.exists() else []


# -- discovery ------------------------------------------------------------------------------
def test_discover_the_real_radiography_database(radiography_root: Path) -> None:
    dataset = discover(radiography_root)
    assert dataset.layout == RADIOGRAPHY_LAYOUT
    assert dataset.classes == ["COVID", "Normal", "Viral Pneumonia"]
    assert {label: len(files) for label, files in dataset.files.items()} == RADIOGRAPHY_COUNTS
    info = dataset.info("radiography")
    assert info == DatasetInfo(name="radiography", classes=RADIOGRAPHY_COUNTS,
                               images=sum(RADIOGRAPHY_COUNTS.values()), layout=RADIOGRAPHY_LAYOUT)
    assert all(p.parent.name == "images" and p.suffix == ".png"
               for files in dataset.files.values() for p in files)


def test_discover_the_real_class_folder_dataset(image_dataset_root: Path) -> None:
    dataset = discover(image_dataset_root)
    assert dataset.layout == CLASS_FOLDER_LAYOUT
    assert dataset.classes == ["COVID", "NORMAL", "VIRAL_PNEUMONIA"]
    for label, files in dataset.files.items():
        on_disk = sorted(p for p in (image_dataset_root / label).iterdir()
                         if p.suffix.lower() in {".png", ".jpg", ".jpeg"})
        assert files == on_disk
        assert files, label
    suffixes = {p.suffix.lower() for files in dataset.files.values() for p in files}
    assert suffixes == {".png", ".jpg", ".jpeg"}
    assert dataset.info("x").images == sum(len(f) for f in dataset.files.values())


def test_masks_are_ignored_in_the_radiography_layout(radiography_root: Path,
                                                     tmp_path: Path) -> None:
    root = tmp_path / "with-masks"
    for label, files in sample_files(radiography_root, 3).items():
        (root / label / "images").mkdir(parents=True)
        (root / label / "masks").mkdir()
        for path in files:
            shutil.copy(path, root / label / "images" / path.name)
            (root / label / "masks" / path.name).write_bytes(_png(255))
        (root / label / "masks" / "extra-mask.png").write_bytes(_png(0))
    (root / "metadata.csv").write_text("file,label\n")
    dataset = discover(root)
    assert dataset.layout == RADIOGRAPHY_LAYOUT
    assert {k: len(v) for k, v in dataset.files.items()} == {
        "COVID": 3, "Normal": 3, "Viral Pneumonia": 3}
    assert all("masks" not in p.parts for files in dataset.files.values() for p in files)


def test_discover_descends_into_a_single_wrapping_folder(tiny_dataset: Path,
                                                         tmp_path: Path) -> None:
    outer = tmp_path / "unzipped"
    outer.mkdir()
    shutil.move(str(tiny_dataset), outer / "COVID-19_Radiography_Dataset")
    (outer / "__MACOSX").mkdir()
    (outer / ".hidden").mkdir()
    dataset = discover(outer)
    assert dataset.layout == RADIOGRAPHY_LAYOUT
    assert dataset.root == outer / "COVID-19_Radiography_Dataset"
    assert dataset.classes == ["COVID", "Normal", "Viral Pneumonia"]


def test_fewer_than_two_classes_is_invalid(tmp_path: Path) -> None:
    one = tmp_path / "one"
    (one / "COVID").mkdir(parents=True)
    (one / "COVID" / "a.png").write_bytes(_png())
    (one / "Normal").mkdir()  # a class folder without images does not count
    (one / "Normal" / "notes.txt").write_text("empty")
    with pytest.raises(InvalidDataset, match="training needs at least 2"):
        discover(one)
    single_radiography = tmp_path / "single"
    (single_radiography / "COVID" / "images").mkdir(parents=True)
    (single_radiography / "COVID" / "images" / "a.png").write_bytes(_png())
    with pytest.raises(InvalidDataset):
        discover(single_radiography)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InvalidDataset):
        discover(empty)


def test_mixed_layouts_are_invalid(tmp_path: Path) -> None:
    root = tmp_path / "mixed"
    (root / "COVID" / "images").mkdir(parents=True)
    (root / "COVID" / "images" / "a.png").write_bytes(_png())
    (root / "Normal").mkdir()
    (root / "Normal" / "b.png").write_bytes(_png())
    (root / "Viral").mkdir()
    (root / "Viral" / "c.png").write_bytes(_png())
    with pytest.raises(InvalidDataset, match="mixed"):
        discover(root)


def test_missing_folder_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFound):
        discover(tmp_path / "nope")


def test_fingerprint_is_stable_across_moves_and_changes_with_one_byte(tiny_dataset: Path,
                                                                      tmp_path: Path) -> None:
    before = discover(tiny_dataset).fingerprint()
    assert len(before) == 64
    assert discover(tiny_dataset).fingerprint() == before
    moved = tmp_path / "elsewhere" / "renamed"
    moved.parent.mkdir()
    shutil.move(str(tiny_dataset), moved)
    assert discover(moved).fingerprint() == before
    victim = discover(moved).files["Normal"][5]
    data = bytearray(victim.read_bytes())
    data[-20] ^= 0x01
    victim.write_bytes(bytes(data))
    changed = discover(moved).fingerprint()
    assert changed != before
    data[-20] ^= 0x01
    victim.write_bytes(bytes(data))
    assert discover(moved).fingerprint() == before


def test_fingerprint_depends_on_labels(tiny_dataset: Path) -> None:
    before = discover(tiny_dataset).fingerprint()
    (tiny_dataset / "Normal").rename(tiny_dataset / "Healthy")
    assert discover(tiny_dataset).fingerprint() != before


def test_list_datasets_lists_only_valid_ones(tiny_dataset: Path, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    assert list_datasets(data_dir) == []
    data_dir.mkdir()
    shutil.copytree(tiny_dataset, data_dir / "b-radiography")
    for label in ("A", "B"):
        (data_dir / "a-folders" / label).mkdir(parents=True)
        for i in range(2):
            (data_dir / "a-folders" / label / f"{i}.png").write_bytes(_png(i * 50))
    (data_dir / "c-broken").mkdir()
    (data_dir / ".staging-123").mkdir()
    shutil.copytree(tiny_dataset, data_dir / ".staging-456")
    (data_dir / "stray.txt").write_text("x")
    infos = list_datasets(data_dir)
    assert [i.name for i in infos] == ["a-folders", "b-radiography"]
    assert infos[0].classes == {"A": 2, "B": 2}
    assert infos[0].layout == CLASS_FOLDER_LAYOUT
    assert infos[1].classes == {"COVID": 12, "Normal": 12, "Viral Pneumonia": 12}
    assert infos[1].images == 36


# -- unpacking zips ------------------------------------------------------------------------
def test_unpack_a_zip_of_real_images(radiography_root: Path, tmp_path: Path) -> None:
    archive = tmp_path / "upload.zip"
    originals = {}
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for label, files in sample_files(radiography_root, 2).items():
            for path in files:
                zf.write(path, f"{label}/images/{path.name}")
                originals[f"{label}/images/{path.name}"] = path.read_bytes()
        zf.writestr(_regular("provenance.csv"), "source\n")
    data_dir = tmp_path / "data"
    info = unpack_zip(archive, data_dir, "xrays", LIMITS)
    assert info == DatasetInfo(name="xrays", layout=RADIOGRAPHY_LAYOUT, images=6,
                               classes={"COVID": 2, "Normal": 2, "Viral Pneumonia": 2})
    assert (data_dir / "xrays").is_dir()
    for name, data in originals.items():
        assert (data_dir / "xrays" / name).read_bytes() == data
    assert _leftovers(data_dir) == ["xrays"]
    assert [i.name for i in list_datasets(data_dir)] == ["xrays"]


def test_unpack_a_zip_wrapped_in_one_folder_with_junk(tmp_path: Path) -> None:
    members = _valid_members("My Dataset/")
    members["My Dataset/README.md"] = b"# notes"
    members["__MACOSX/My Dataset/COVID/._0.png"] = b"resource fork junk"
    members["My Dataset/COVID/.DS_Store"] = b"\0\0"
    archive = _zip(tmp_path / "wrapped.zip", members)
    with zipfile.ZipFile(archive, "a") as zf:
        directory = zipfile.ZipInfo("My Dataset/")
        directory.external_attr = (stat.S_IFDIR | 0o755) << 16 | 0x10
        zf.writestr(directory, b"")
    data_dir = tmp_path / "data"
    info = unpack_zip(archive, data_dir, "wrapped", LIMITS)
    assert info.classes == {"COVID": 3, "Normal": 3}
    assert info.layout == CLASS_FOLDER_LAYOUT
    assert not (data_dir / "wrapped" / "__MACOSX").exists()
    assert _leftovers(data_dir) == ["wrapped"]


def test_unpack_a_zip_written_by_pythons_writestr(tmp_path: Path) -> None:
    archive = tmp_path / "plain.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for name, data in _valid_members().items():
            zf.writestr(name, data)
    info = unpack_zip(archive, tmp_path / "data", "plain", LIMITS)
    assert info.classes == {"COVID": 3, "Normal": 3}


def test_unpack_a_zip_from_a_dos_tool_with_no_unix_mode(tmp_path: Path) -> None:
    archive = tmp_path / "dos.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for name, data in _valid_members().items():
            member = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
            member.create_system = 0
            member.external_attr = 0x20  # MS-DOS "archive" attribute, no Unix mode
            zf.writestr(member, data)
    assert unpack_zip(archive, tmp_path / "data", "dos", LIMITS).images == 6


def _patched_first_member(path: Path, first: tuple[str, bytes], **fields: int) -> Path:
    """A zip whose first member's headers are rewritten, followed by a valid dataset.

    ``fields``: ``flag_bits``, ``crc`` and/or ``file_size``, patched in both the local and
    the central header, as a hand-crafted hostile archive would carry them.
    """
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr(_regular(first[0]), first[1])
        for name, data in _valid_members().items():
            zf.writestr(_regular(name), data)
    patched = bytearray(buffer.getvalue())
    local = patched.find(b"PK\x03\x04")
    central = patched.find(b"PK\x01\x02")
    assert local == 0 and central > local
    offsets = {"flag_bits": (6, 8, "<H"), "crc": (14, 16, "<I"), "file_size": (22, 24, "<I")}
    for field, value in fields.items():
        local_at, central_at, fmt = offsets[field]
        size = struct.calcsize(fmt)
        if field == "flag_bits":
            value |= struct.unpack_from(fmt, patched, local + local_at)[0]
        patched[local + local_at:local + local_at + size] = struct.pack(fmt, value)
        patched[central + central_at:central + central_at + size] = struct.pack(fmt, value)
    path.write_bytes(bytes(patched))
    with zipfile.ZipFile(path) as check:  # still a readable zip, with the lie in its index
        info = check.infolist()[0]
        assert info.filename == first[0]
        for field, value in fields.items():
            assert getattr(info, "CRC" if field == "crc" else field) & value == value
    return path


BIG_PNG = _png(size=(300, 300))


def _hostile(tmp_path: Path, kind: str) -> tuple[Path, ZipLimits]:
    archive = tmp_path / f"{kind}.zip"
    members = _valid_members()
    limits = LIMITS
    if kind == "not-a-zip":
        archive.write_bytes(b"PK\x03\x04 this is not really a zip archive" * 20)
        return archive, limits
    if kind == "lying-size":
        return _patched_first_member(archive, ("COVID/big.png", BIG_PNG), file_size=100), limits
    if kind == "lying-size-and-crc":
        return _patched_first_member(archive, ("COVID/big.png", BIG_PNG), file_size=100,
                                     crc=zlib.crc32(BIG_PNG[:100])), limits
    if kind == "encrypted":
        return _patched_first_member(archive, ("Normal/secret.png", _png()),
                                     flag_bits=0x1), limits
    _zip(archive, members)
    with zipfile.ZipFile(archive, "a") as zf:
        if kind == "dot-dot":
            zf.writestr(_regular("COVID/../../escaped.png"), _png())
        elif kind == "dot-dot-backslash":
            zf.writestr(_regular("COVID\\..\\..\\escaped.png"), _png())
        elif kind == "absolute":
            zf.writestr(_regular("/tmp/escaped.png"), _png())
        elif kind == "drive-letter":
            zf.writestr(_regular("C:/escaped.png"), _png())
        elif kind == "symlink":
            link = zipfile.ZipInfo("COVID/link.png")
            link.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(link, "/etc/passwd")
        elif kind == "fifo":
            fifo = zipfile.ZipInfo("COVID/pipe.png")
            fifo.external_attr = (stat.S_IFIFO | 0o644) << 16
            zf.writestr(fifo, b"")
        elif kind == "non-image":
            zf.writestr(_regular("COVID/scan.dcm"), b"DICM" + b"\0" * 100)
        elif kind == "executable":
            zf.writestr(_regular("Normal/run.sh"), b"#!/bin/sh\nrm -rf /\n")
        elif kind == "text-as-png":
            zf.writestr(_regular("Normal/fake.png"), b"just some text pretending to be a png")
        elif kind == "png-with-garbage-pixels":  # its chunks are whole, its zlib stream is not
            zf.writestr(_regular("Normal/garbage.png"), png_declaring(64, 64, b"garbage!" * 50))
        elif kind == "truncated-jpeg":
            buffer = io.BytesIO()
            Image.new("L", (64, 64), 99).save(buffer, "JPEG")
            zf.writestr(_regular("Normal/cut.jpg"), buffer.getvalue()[:300])
        elif kind == "gif-as-png":
            buffer = io.BytesIO()
            Image.new("L", (8, 8)).save(buffer, "GIF")
            zf.writestr(_regular("Normal/fake.png"), buffer.getvalue())
        elif kind == "nested-zip":
            inner = io.BytesIO()
            with zipfile.ZipFile(inner, "w") as nested:
                nested.writestr(_regular("a.png"), _png())
            zf.writestr(_regular("COVID/more.zip"), inner.getvalue())
        elif kind == "too-many-members":
            limits = ZipLimits(max_members=len(members), max_uncompressed_bytes=10**9)
            zf.writestr(_regular("Normal/extra.png"), _png())
        elif kind == "zip-bomb":  # within the size limits; refused by its compression ratio
            zf.writestr(_regular("Normal/zeros.png"), _png() + b"\0" * 2_000_000)
        elif kind == "class-name-over-255-bytes":
            zf.writestr(_regular("C" * 256 + "/a.png"), _png())
        elif kind == "file-name-over-255-bytes":
            zf.writestr(_regular("Normal/" + "é" * 130 + ".png"), _png())
        elif kind == "path-of-5000-characters":
            zf.writestr(_regular("Normal/" + "d/" * 2500 + "a.png"), _png())
        elif kind == "file-then-folder":
            zf.writestr(_regular("Normal/x.png"), _png())
            zf.writestr(_regular("Normal/x.png/y.png"), _png())
        elif kind == "folder-then-file":
            zf.writestr(_regular("Normal/x.png/y.png"), _png())
            zf.writestr(_regular("Normal/x.png"), _png())
        elif kind == "too-large":
            total = sum(len(d) for d in members.values())
            limits = ZipLimits(max_members=1000, max_uncompressed_bytes=total + 100)
            zf.writestr(_regular("Normal/zeros.png"), _png(size=(64, 64)) + b"\0" * 200)
        else:  # pragma: no cover
            raise AssertionError(kind)
    return archive, limits


HOSTILE = ["not-a-zip", "lying-size", "lying-size-and-crc", "dot-dot", "dot-dot-backslash",
           "absolute", "drive-letter", "symlink", "fifo", "non-image", "executable", "text-as-png",
           "png-with-garbage-pixels", "truncated-jpeg", "gif-as-png", "nested-zip",
           "too-many-members", "too-large", "encrypted", "zip-bomb",
           "class-name-over-255-bytes", "file-name-over-255-bytes", "path-of-5000-characters",
           "file-then-folder", "folder-then-file"]


@pytest.mark.parametrize("kind", HOSTILE)
def test_hostile_zips_are_refused_and_leave_nothing_behind(tmp_path: Path, kind: str) -> None:
    archive, limits = _hostile(tmp_path, kind)
    data_dir = tmp_path / "data"
    with pytest.raises(InvalidDataset) as caught:
        unpack_zip(archive, data_dir, "upload", limits)
    assert caught.value.code == "invalid_dataset"
    assert " at 0x" not in caught.value.message  # no Python object's address
    assert _leftovers(data_dir) == []
    assert not (tmp_path / "escaped.png").exists()
    assert not (tmp_path.parent / "escaped.png").exists()
    assert {p.name for p in tmp_path.iterdir()} <= {"data", archive.name}


@pytest.mark.parametrize(("kind", "member"), [
    ("png-with-garbage-pixels", "Normal/garbage.png"), ("truncated-jpeg", "Normal/cut.jpg"),
    ("gif-as-png", "Normal/fake.png")])
def test_an_image_the_jobs_cannot_read_is_refused_by_its_name(tmp_path: Path, kind: str,
                                                             member: str) -> None:
    archive, limits = _hostile(tmp_path, kind)
    with pytest.raises(InvalidDataset, match=f"zip member '{member}' is not an image the jobs"):
        unpack_zip(archive, tmp_path / "data", "upload", limits)


DECLARED_ONLY = zlib.compress(b"\0" * 1000)  # never decoded: the header is refused first


@pytest.mark.parametrize(("member", "data", "max_pixels"), [
    # Pillow's decompression bomb (twice its own limit), as in the replay: 500 before
    ("COVID/bomb.png", png_declaring(20000, 10000, DECLARED_ONLY), 50_000_000),
    ("COVID/huge.png", png_declaring(7746, 7746, DECLARED_ONLY), 50_000_000),  # 60 M
    ("COVID/big.png", _png(size=(65, 64)), 64 * 64),  # the limit given, not a default
    ("COVID/big.dcm", make_dicom(np.zeros((65, 64), np.uint8), 8), 64 * 64),
])
def test_an_image_over_the_pixel_limit_is_too_large_by_its_name(
        tmp_path: Path, member: str, data: bytes, max_pixels: int) -> None:
    archive = _zip(tmp_path / "big.zip", {**_valid_members(), member: data})
    limits = ZipLimits(1000, 64 * 1024 * 1024, max_image_pixels=max_pixels)
    data_dir = tmp_path / "data"
    with pytest.raises(ImageTooLarge) as caught:
        unpack_zip(archive, data_dir, "upload", limits)
    assert caught.value.code == "image_too_large"
    # a DICOM's file name may name the patient: only its folder is named
    named = "a DICOM member of 'COVID'" if member.endswith(".dcm") else f"zip member {member!r}"
    assert caught.value.message.startswith(f"{named}: ")
    assert _leftovers(data_dir) == []  # the members before it too


def test_limits_are_inclusive(tmp_path: Path) -> None:
    members = _valid_members()
    archive = _zip(tmp_path / "exact.zip", members)
    exact = ZipLimits(max_members=len(members),
                      max_uncompressed_bytes=sum(len(d) for d in members.values()),
                      max_image_pixels=8 * 8)
    info = unpack_zip(archive, tmp_path / "data", "exact", exact)
    assert info.images == len(members)


def test_a_zip_of_one_class_is_an_evaluation_set_and_one_of_none_is_refused(
        tmp_path: Path) -> None:
    # one class (another hospital's COVID films) is stored for evaluation; training it fails
    archive = _zip(tmp_path / "one.zip", {"COVID/a.png": _png(), "COVID/b.png": _png(9)})
    data_dir = tmp_path / "data"
    assert unpack_zip(archive, data_dir, "one", LIMITS).classes == {"COVID": 2}
    with pytest.raises(InvalidDataset, match="training needs at least 2"):
        discover(data_dir / "one")
    empty = _zip(tmp_path / "none.zip", {"notes.txt": b"no images"})
    with pytest.raises(InvalidDataset):
        unpack_zip(empty, data_dir, "none", LIMITS)
    assert _leftovers(data_dir) == ["one"]  # nothing of the refused one


def test_an_existing_name_is_refused_and_the_existing_dataset_kept(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = unpack_zip(_zip(tmp_path / "a.zip", _valid_members()), data_dir, "taken", LIMITS)
    before = sorted(p.relative_to(data_dir) for p in data_dir.rglob("*"))
    other = _zip(tmp_path / "b.zip", {f"X/{i}.png": _png(i) for i in range(2)}
                 | {f"Y/{i}.png": _png(i) for i in range(2)})
    with pytest.raises(DatasetExists) as caught:
        unpack_zip(other, data_dir, "taken", LIMITS)
    assert caught.value.code == "dataset_exists"
    assert sorted(p.relative_to(data_dir) for p in data_dir.rglob("*")) == before
    assert discover(data_dir / "taken").info("taken") == first
    assert _leftovers(data_dir) == ["taken"]


def test_a_full_disk_while_unpacking_is_storage_full_and_leaves_nothing(
        tmp_path: Path, small_disk: SmallDisk) -> None:
    noise = np.random.default_rng(0).integers(0, 256, (256, 256), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, "PNG")  # 64 KB that does not compress
    members = {f"{label}/{i}.png": buffer.getvalue() + bytes([i])
               for label in ("COVID", "Normal") for i in range(8)}
    archive = _zip(tmp_path / "big.zip", members)
    data_dir = small_disk.path / "data"
    small_disk.resize(small_disk.used() + 256 * 1024)  # room for a few members, not 16
    with pytest.raises(StorageFull) as caught:
        unpack_zip(archive, data_dir, "big", LIMITS)
    assert caught.value.code == "storage_full"
    assert _leftovers(data_dir) == []
    small_disk.resize(64 * 1024 * 1024)  # once there is room, the same upload works
    assert unpack_zip(archive, data_dir, "big", LIMITS).classes == {"COVID": 8, "Normal": 8}


MODEL = ["COVID", "Normal", "Viral Pneumonia"]


def test_names_match_across_case_and_separators() -> None:
    assert match_classes(["COVID", "NORMAL", "VIRAL_PNEUMONIA"], MODEL) == {
        "COVID": 0, "NORMAL": 1, "VIRAL_PNEUMONIA": 2}
    assert match_classes(["viral-pneumonia"], MODEL) == {"viral-pneumonia": 2}


def test_an_unknown_class_is_an_error_not_a_silent_zero() -> None:
    with pytest.raises(InvalidDataset, match="Tuberculosis"):
        match_classes(["COVID", "Tuberculosis"], MODEL)
    with pytest.raises(InvalidDataset, match=r"^dataset 'tb': classes \['Tuberculosis'\]"):
        match_classes(["COVID", "Tuberculosis"], MODEL, "tb")


def test_datasets_combine_by_class_name_and_keep_each_image_source(
        radiography_root: Path, image_dataset_root: Path) -> None:
    first, second = discover(radiography_root), discover(image_dataset_root)
    both = combine([("radiography", first), ("image-dataset", second)])
    assert both.classes == first.classes  # spelled as in the first
    assert len(both.files["Viral Pneumonia"]) == (len(first.files["Viral Pneumonia"])
                                                  + len(second.files["VIRAL_PNEUMONIA"]))
    assert both.sources[second.files["NORMAL"][0]] == "image-dataset"
    assert both.sources[first.files["COVID"][0]] == "radiography"
    assert combine([("radiography", first)]) is first
    with pytest.raises(InvalidDataset, match="named twice"):
        combine([("a", first), ("a", second)])
    unknown = Dataset(root=first.root, layout="class-folders",
                      files={"Tuberculosis": first.files["COVID"][:1]})
    with pytest.raises(InvalidDataset, match="dataset 'tb': .*Tuberculosis"):
        combine([("radiography", first), ("tb", unknown)])


@pytest.mark.parametrize("name", ["Thumbs.db", "desktop.ini", "__MACOSX", "thumbs.DB"])
def test_a_dataset_may_not_take_a_name_listings_skip(tmp_path: Path, name: str) -> None:
    archive = _zip(tmp_path / "a.zip", _valid_members())
    with pytest.raises(InvalidDataset, match="choose another"):
        unpack_zip(archive, tmp_path / "data", name, LIMITS)
    assert not (tmp_path / "data" / name).exists()
