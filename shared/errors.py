"""Domain exceptions. Each has a stable machine-readable ``code``; HTTP mapping lives in api."""

from __future__ import annotations

import errno


class CxrError(Exception):
    """Base class: ``code`` is stable and documented, ``message`` is for people."""

    code = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidImage(CxrError):
    code = "invalid_image"


class UnsupportedImageFormat(CxrError):
    code = "unsupported_media_type"


class UnsupportedDicom(CxrError):
    """A DICOM file this service does not read: multi-frame, colour, multi-sample."""

    code = "unsupported_dicom"


class UnsupportedTransferSyntax(UnsupportedDicom):
    """Compressed pixel data for which no decoder is installed."""

    code = "unsupported_transfer_syntax"


class DicomWithoutPixels(InvalidImage):
    code = "dicom_no_pixel_data"


class Unauthorized(CxrError):
    code = "unauthorized"


class Forbidden(CxrError):
    code = "forbidden"


class ImageTooLarge(CxrError):
    code = "image_too_large"


class NotAChestXray(CxrError):
    """The gate before classification refused the image: it gets no diagnosis."""

    code = "not_a_chest_xray"


class InvalidDataset(CxrError):
    code = "invalid_dataset"


class DatasetNotFound(CxrError):
    code = "dataset_not_found"


class DatasetExists(CxrError):
    code = "dataset_exists"


class PayloadTooLarge(CxrError):
    code = "payload_too_large"


class TooManyImages(CxrError):
    code = "too_many_images"


class ModelNotFound(CxrError):
    code = "model_not_found"


class NoActiveModel(CxrError):
    code = "no_model"


class ModelLoadFailed(CxrError):
    code = "model_load_failed"


class UnknownClass(CxrError):
    code = "unknown_class"


class ExplanationUnavailable(CxrError):
    """A version whose network lacks the layers Grad-CAM needs."""

    code = "explanation_unavailable"


class RegistryError(CxrError):
    code = "registry_error"


class ManifestUnreadable(RegistryError):
    """A version's manifest is there but is not a manifest: the version is broken."""


class RegistryUnavailable(RegistryError):
    """The object store holding the registry could not be reached or refused the request."""

    code = "registry_unavailable"


class JobNotFound(CxrError):
    code = "job_not_found"


class JobNotCancellable(CxrError):
    code = "job_not_cancellable"


class JobCancelled(CxrError):
    code = "job_cancelled"


class JobParamsUnreadable(CxrError):
    """A job's stored parameters are not what this version of the service runs for its kind."""

    code = "job_params_unreadable"


class TrainingDiverged(CxrError):
    code = "training_diverged"


class ServiceBusy(CxrError):
    """Too much work of one kind at once; the client should retry shortly."""

    code = "busy"


class WeightsUnavailable(CxrError):
    code = "weights_unavailable"


class ClassMismatch(CxrError):
    """A fine-tune's datasets do not hold exactly the classes of the version it starts from."""

    code = "class_mismatch"


class ConflictingParameters(CxrError):
    """A request names a value that another of its choices fixes (a fine-tune's image size)."""

    code = "conflicting_parameters"


class PredictionNotFound(CxrError):
    code = "prediction_not_found"


class InUse(CxrError):
    """What a request would delete or replace is in use: the active version, the shadow, or a
    version or dataset that a queued or running job needs."""

    code = "in_use"


class ConfirmationRequired(CxrError):
    """A change that is allowed but needs an explicit confirmation (``force``): activating a
    version not shown better than chance."""

    code = "confirmation_required"


class ShadowNotFound(CxrError):
    """The version named is not the shadow, and was never shadowed within the log's retention."""

    code = "shadow_not_found"


class BrokerUnavailable(CxrError):
    code = "broker_unavailable"


class StorageFull(CxrError):
    """The disk (or quota) ran out while writing; whatever was half-written is removed."""

    code = "storage_full"


# Retrying will not help with these until someone frees space.
_OUT_OF_SPACE = {errno.ENOSPC, errno.EDQUOT}


def is_out_of_space(exc: BaseException) -> bool:
    """Whether ``exc``, or an error it was raised from, says the disk or quota is full."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, OSError) and current.errno in _OUT_OF_SPACE:
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False
