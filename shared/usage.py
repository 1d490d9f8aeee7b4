"""What queued and running jobs need: the versions and datasets that must not be deleted
under them. Read from the job store's records, so the API and the worker decide alike."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from shared.errors import InUse, JobNotFound
from shared.job_store import JobRecord, JobStore
from shared.registry.base import VERSION_PATTERN
from shared.schemas import EvaluationParams, JobState
from shared.training_params import TrainingParams

OPEN_STATES = (JobState.queued, JobState.running)


@dataclass(frozen=True)
class JobUsage:
    """Each version and dataset an open job needs, with the (newest) job that needs it."""

    versions: dict[str, str] = field(default_factory=dict)  # version -> job id
    datasets: dict[str, str] = field(default_factory=dict)  # dataset -> job id
    states: dict[str, JobState] = field(default_factory=dict)  # job id -> its state

    def check_version(self, version: str) -> None:
        """InUse when an open job needs ``version``."""
        check_free("version", version, self.versions, self.states)

    def check_dataset(self, name: str) -> None:
        """InUse when an open job needs the dataset ``name``."""
        check_free("dataset", name, self.datasets, self.states)


def check_free(what: str, name: str, users: Mapping[str, str],
               states: Mapping[str, JobState] | None = None) -> None:
    """InUse, naming the job, when ``users`` (name -> job id) says a job needs ``name``."""
    job_id = users.get(name)
    if job_id is None:
        return
    state = (states or {}).get(job_id)
    how = f" ({state.value})" if state is not None else ""
    raise InUse(f"job {job_id}{how} uses {what} {name}; wait for it to end or cancel it")


def _needs(record: JobRecord) -> tuple[list[str], list[str]]:
    """The versions and the datasets one job reads."""
    params = record.params
    if isinstance(params, TrainingParams):
        versions = [params.base_version] if params.base_version else []
        return versions, [params.dataset, *params.datasets, *params.external_datasets]
    if isinstance(params, EvaluationParams):
        return [params.version, *([params.compare] if params.compare else [])], [params.dataset]
    # Parameters this version cannot read: what the status still says.
    return [record.model_version] if record.model_version else [], [record.dataset]


def _open_records(jobs: JobStore, limit: int) -> Iterator[JobRecord]:
    for status in jobs.recent(limit):
        if status.state not in OPEN_STATES:
            continue
        try:
            record = jobs.record(status.job_id)
        except JobNotFound:
            continue
        if record.state in OPEN_STATES:  # it may have ended since it was listed
            yield record


def job_usage(jobs: JobStore, limit: int = 1000) -> JobUsage:
    """What the queued and running jobs among the ``limit`` most recent ones use. A version
    named "active" is not listed: the active version is never deleted anyway."""
    versions: dict[str, str] = {}
    datasets: dict[str, str] = {}
    states: dict[str, JobState] = {}
    for record in _open_records(jobs, limit):  # newest first: the newest job is named
        needed_versions, needed_datasets = _needs(record)
        states[record.job_id] = record.state
        for version in needed_versions:
            if VERSION_PATTERN.match(version):
                versions.setdefault(version, record.job_id)
        for name in needed_datasets:
            datasets.setdefault(name, record.job_id)
    return JobUsage(versions, datasets, states)
