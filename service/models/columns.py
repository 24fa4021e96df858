"""What every table is built on: the declarative base with its naming convention, and
the column types (UTC datetimes, the typed plan and step) and the status column."""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Enum, MetaData
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.types import TypeDecorator

from ingestion.capacity.route_plan import Plan, Step, step_from_json


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every dialect (SQLite hands back naive ones)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class PlanJSON(TypeDecorator[Plan]):
    """A job's plan, typed in Python and stored as `Plan.to_json()`: every reader gets a
    checked `Plan`, never a dict to pick apart."""

    impl = JSON
    cache_ok = True

    def process_bind_param(self, value: Plan | None, dialect: Dialect) -> dict[str, Any] | None:
        return None if value is None else value.to_json()

    def process_result_value(self, value: Any, dialect: Dialect) -> Plan | None:
        return None if value is None else Plan.from_json(value)


class StepJSON(TypeDecorator[Step]):
    """The request of a map-reduce plan that a child job runs, stored as its `to_json()`."""

    impl = JSON
    cache_ok = True

    def process_bind_param(self, value: Step | None, dialect: Dialect) -> dict[str, Any] | None:
        return None if value is None else value.to_json()

    def process_result_value(self, value: Any, dialect: Dialect) -> Step | None:
        return None if value is None else step_from_json(value)


class Base(DeclarativeBase):
    # Stable constraint names so migrations can refer to them on every dialect.
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(column_0_label)s",
            "uq": "uq_%(table_name)s_%(column_0_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )
    type_annotation_map = {  # noqa: RUF012 - SQLAlchemy reads this class attribute
        datetime: UTCDateTime(),
        dict[str, Any]: JSON,
        list[Any]: JSON,
    }


def status_enum(cls: type[enum.Enum]) -> Enum:
    # Stored as VARCHAR + CHECK, so adding a state later is a plain migration.
    return Enum(cls, native_enum=False, length=32, values_callable=lambda e: [m.value for m in e])
