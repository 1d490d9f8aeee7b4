"""Query parameter types shared by the routes that list records."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import Query
from pydantic import AwareDatetime, BeforeValidator

_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}")


def _iso_8601(value: object) -> object:
    # pydantic would read a bare number as a Unix time: the parameter is documented (and
    # checked by the schema fuzz tests) as an ISO 8601 date-time
    if isinstance(value, str) and not _ISO_DATE.match(value):
        raise ValueError("an ISO 8601 time with its zone, e.g. 2026-12-06T10:00:00Z")
    return value


Since = Annotated[AwareDatetime | None, BeforeValidator(_iso_8601),
                  Query(description="ISO 8601, with its zone.")]
