"""A compute instance's start and stop schedules (`schedules.compute_start_stop`, Azure reference
§2): cron or recurrence triggers, checked as Azure checks them (cible.core.planning.schedules)."""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field, field_validator

from .common import LowerStr, OptStr, SpecModel


class CronTrigger(SpecModel):
    type: Literal["cron"] = "cron"
    expression: str
    start_time: OptStr = None
    end_time: OptStr = None
    time_zone: str | None = None

    @field_validator("expression")
    @classmethod
    def _five_fields(cls, value: str) -> str:
        if len(value.split()) != 5:
            raise ValueError(f"{value!r} is not a 5-field cron expression (minute hour day month weekday)")
        return value


WeekDay = Literal["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]


class RecurrencePattern(SpecModel):
    hours: list[Annotated[int, Field(ge=0, le=23)]]
    minutes: list[Annotated[int, Field(ge=0, le=59)]]
    week_days: list[Annotated[WeekDay, LowerStr]] | None = None
    month_days: list[Annotated[int, Field(ge=1, le=31)]] | None = None


class RecurrenceTrigger(SpecModel):
    type: Literal["recurrence"] = "recurrence"
    frequency: Annotated[Literal["minute", "hour", "day", "week", "month"], LowerStr]
    interval: int = Field(ge=1)
    schedule: RecurrencePattern | None = None
    start_time: OptStr = None
    end_time: OptStr = None
    time_zone: str | None = None


Trigger = Annotated[Union[CronTrigger, RecurrenceTrigger], Field(discriminator="type")]


class ComputeStartStopSchedule(SpecModel):
    action: Annotated[Literal["start", "stop"], LowerStr]
    state: Annotated[Literal["enabled", "disabled"], LowerStr] = "enabled"
    trigger: Trigger


class ComputeSchedules(SpecModel):
    compute_start_stop: list[ComputeStartStopSchedule] = Field(default_factory=list)
