"""Dependencies, defined once as ``Annotated`` aliases and used as parameter types."""

from __future__ import annotations

from typing import Annotated

from celery import Celery
from fastapi import Depends, Request

from api.serving import ModelServer
from shared.config import Settings
from shared.jobs import JobStore
from shared.registry import Registry


def get_app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_registry(request: Request) -> Registry:
    registry: Registry = request.app.state.registry
    return registry


def get_model_server(request: Request) -> ModelServer:
    server: ModelServer = request.app.state.model_server
    return server


def get_job_store(request: Request) -> JobStore:
    store: JobStore = request.app.state.jobs
    return store


def get_queue(request: Request) -> Celery:
    queue: Celery = request.app.state.queue
    return queue


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
RegistryDep = Annotated[Registry, Depends(get_registry)]
ModelServerDep = Annotated[ModelServer, Depends(get_model_server)]
JobStoreDep = Annotated[JobStore, Depends(get_job_store)]
QueueDep = Annotated[Celery, Depends(get_queue)]
