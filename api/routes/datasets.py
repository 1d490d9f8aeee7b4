"""Datasets: upload (a zip of class folders), list, delete."""

from __future__ import annotations

import re
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import IO, Annotated

from fastapi import APIRouter, File, Form, Request, UploadFile, status

from api.deps import JobStoreDep, SettingsDep
from api.plumbing.auth import Admin, Reader
from api.plumbing.body_guard import GuardedRoute
from api.plumbing.errors import responses
from shared.datasets import ZipLimits, dataset_path, discover, list_datasets, unpack_zip
from shared.errors import DatasetNotFound, InvalidDataset, PayloadTooLarge
from shared.monitoring.views import Deleted
from shared.schemas import NAME_PATTERN, DatasetInfo, DatasetList
from shared.usage import job_usage

# Reads answer 401 without a key when CXR_REQUIRE_KEY_FOR_READS is on.
router = APIRouter(
    route_class=GuardedRoute, prefix="/datasets", tags=["datasets"], dependencies=Reader,
    responses=responses(401))


@router.post("", status_code=status.HTTP_201_CREATED, response_model=DatasetInfo,
             responses=responses(400, 401, 403, 409, 413, 422, 507), dependencies=Admin)
def create_dataset(
    request: Request,
    settings: SettingsDep,
    name: Annotated[str, Form(pattern=NAME_PATTERN, description="Name of the new dataset.")],
    file: Annotated[UploadFile, File(description="A zip of <Class>/[images/]*.png files.")],
) -> DatasetInfo:
    """Store a dataset from a zip archive, all of it or nothing: every image must decode
    as the jobs will read it (413 for one over the pixel limit, 422 otherwise)."""
    request.state.audit_target = name
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=settings.state_dir, suffix=".zip") as spool:
        if _copy_limited(file.file, spool, settings.max_upload_bytes) == 0:
            raise InvalidDataset("the uploaded file is empty")
        spool.flush()
        limits = ZipLimits(settings.max_zip_members, settings.max_zip_uncompressed_bytes,
                           settings.max_image_pixels, settings.max_zip_compression_ratio)
        return unpack_zip(Path(spool.name), settings.data_dir, name, limits)


def _copy_limited(source: IO[bytes], target: IO[bytes], limit: int) -> int:
    copied = 0
    while chunk := source.read(1 << 20):
        copied += len(chunk)
        if copied > limit:
            raise PayloadTooLarge(f"uploads are limited to {limit} bytes")
        target.write(chunk)
    return copied


@router.get("", response_model=DatasetList)
def list_all_datasets(settings: SettingsDep) -> DatasetList:
    """Every stored dataset with its per-class image counts."""
    return DatasetList(datasets=list_datasets(settings.data_dir))


@router.get("/{name}", response_model=DatasetInfo, responses=responses(404, 422))
def get_dataset(settings: SettingsDep, name: str) -> DatasetInfo:
    """One dataset's classes and counts."""
    if re.fullmatch(NAME_PATTERN, name) is None:
        raise DatasetNotFound(f"no dataset {name!r}")
    return discover(dataset_path(settings.data_dir, name), min_classes=1).info(name)


@router.delete("/{name}", response_model=Deleted, responses=responses(401, 403, 404, 409, 422),
               dependencies=Admin)
def delete_dataset(settings: SettingsDep, jobs: JobStoreDep, name: str) -> Deleted:
    """Remove a dataset, all of it or nothing (409 while a queued or running job uses it)."""
    if re.fullmatch(NAME_PATTERN, name) is None:
        raise DatasetNotFound(f"no dataset {name!r}")
    folder = dataset_path(settings.data_dir, name)
    if not folder.is_dir():
        raise DatasetNotFound(f"no dataset {name!r}")
    job_usage(jobs).check_dataset(name)
    # Hidden at once (listings and jobs skip dot-folders), then removed at leisure: a reader
    # sees the whole dataset or none of it, even if the removal stops half-way.
    hidden = folder.with_name(f".deleting-{name}-{secrets.token_hex(4)}")
    folder.rename(hidden)
    shutil.rmtree(hidden, ignore_errors=True)
    return Deleted(deleted="dataset", name=name)
