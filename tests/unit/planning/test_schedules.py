from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from cible.core.models.compute_schedules import ComputeSchedules, ComputeStartStopSchedule
from cible.core.planning.schedules import (
    WINDOWS_ZONES,
    Firing,
    check_schedules,
    due_action,
    firings,
    next_firing,
    resolve_time_zone,
)

UTC = timezone.utc


def at(text: str) -> datetime:
    """An aware UTC datetime from '2026-03-08T10:00'."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def cron(expression: str, action: str = "stop", **trigger) -> dict:
    return {"action": action, "trigger": {"type": "cron", "expression": expression, **trigger}}


def recurrence(frequency: str, interval: int = 1, action: str = "start", **trigger) -> dict:
    return {
        "action": action,
        "trigger": {"type": "recurrence", "frequency": frequency, "interval": interval, **trigger},
    }


def times(schedules, after: str, until: str) -> list[datetime]:
    return [f.at for f in firings(schedules, at(after), at(until))]


# ---- cron and time zones ----------------------------------------------------


def test_daily_cron_stop_follows_los_angeles_wall_clock_across_the_march_dst_change():
    # US DST starts 2026-03-08: 18:00 PST is 02:00 UTC next day, 18:00 PDT is 01:00 UTC.
    schedules = [cron("0 18 * * *", time_zone="Pacific Standard Time")]
    found = firings(schedules, at("2026-03-06T12:00"), at("2026-03-10T12:00"))
    assert [f.at for f in found] == [
        at("2026-03-07T02:00"),  # 6 March 18:00 PST
        at("2026-03-08T02:00"),  # 7 March 18:00 PST
        at("2026-03-09T01:00"),  # 8 March 18:00 PDT
        at("2026-03-10T01:00"),  # 9 March 18:00 PDT
    ]
    assert all(f.action == "stop" and f.index == 0 and f.at.tzinfo == UTC for f in found)


def test_daily_cron_across_the_november_dst_change():
    schedules = [cron("0 18 * * *", time_zone="America/Los_Angeles")]
    assert times(schedules, "2026-10-31T12:00", "2026-11-02T12:00") == [
        at("2026-11-01T01:00"),  # 31 October 18:00 PDT
        at("2026-11-02T02:00"),  # 1 November 18:00 PST
    ]


def test_a_wall_time_skipped_by_spring_forward_fires_when_the_gap_ends():
    # 02:30 does not exist in Los Angeles on 2026-03-08; clocks jump 02:00 PST -> 03:00 PDT (10:00 UTC).
    schedules = [cron("30 2 * * *", time_zone="America/Los_Angeles")]
    assert times(schedules, "2026-03-07T00:00", "2026-03-09T23:00") == [
        at("2026-03-07T10:30"),  # 02:30 PST
        at("2026-03-08T10:00"),  # the jump
        at("2026-03-09T09:30"),  # 02:30 PDT
    ]


def test_a_wall_time_repeated_by_fall_back_fires_once_at_its_first_occurrence():
    schedules = [cron("30 1 * * *", time_zone="America/Los_Angeles")]
    # 01:30 happens at 08:30 UTC (PDT) and again at 09:30 UTC (PST) on 2026-11-01.
    assert times(schedules, "2026-11-01T00:00", "2026-11-01T23:00") == [at("2026-11-01T08:30")]


def test_every_fifteen_minutes_across_the_gap_has_no_repeats_and_stays_ordered():
    schedules = [cron("*/15 * * * *", time_zone="America/Los_Angeles")]
    found = times(schedules, "2026-03-08T09:40", "2026-03-08T10:20")
    # 01:45 PST, then 02:00..02:45 (skipped) and 03:00 PDT all fire at the jump, once; then 03:15 PDT.
    assert found == [at("2026-03-08T09:45"), at("2026-03-08T10:00"), at("2026-03-08T10:15")]


def test_a_windows_zone_and_its_iana_name_fire_at_the_same_times():
    windows = [cron("0 8 * * 1-5", time_zone="W. Europe Standard Time")]
    iana = [cron("0 8 * * 1-5", time_zone="Europe/Berlin")]
    window = ("2026-03-20T00:00", "2026-04-03T00:00")  # across Europe's change on 29 March
    assert times(windows, *window) == times(iana, *window)
    assert times(windows, *window)[-1] == at("2026-04-02T06:00")  # 08:00 CEST
    assert resolve_time_zone("pacific standard time") == ZoneInfo("America/Los_Angeles")


def test_no_time_zone_is_utc():
    assert resolve_time_zone(None) == ZoneInfo("UTC")
    assert times([cron("0 18 * * *")], "2026-01-01T00:00", "2026-01-02T00:00") == [at("2026-01-01T18:00")]


def test_every_windows_zone_in_the_table_resolves():
    for windows, iana in WINDOWS_ZONES.items():
        assert resolve_time_zone(windows) == ZoneInfo(iana)
    for name in (
        "UTC",
        "GMT Standard Time",
        "India Standard Time",
        "AUS Eastern Standard Time",
        "Eastern Standard Time",
    ):
        assert name in WINDOWS_ZONES


@pytest.mark.parametrize("name", ["Mars Standard Time", "America", "../etc/passwd", "Europe/Atlantis"])
def test_an_unknown_time_zone_is_refused_with_examples(name):
    with pytest.raises(ValueError) as info:
        resolve_time_zone(name)
    message = str(info.value)
    assert "unknown time zone" in message and repr(name) in message
    assert "Pacific Standard Time" in message and "America/Los_Angeles" in message


# ---- enabled, start_time, end_time, window edges -----------------------------


def test_a_disabled_schedule_never_fires():
    schedules = [{**cron("* * * * *"), "state": "disabled"}]
    assert firings(schedules, at("2026-01-01T00:00"), at("2026-01-02T00:00")) == []
    assert due_action(schedules, at("2026-01-01T00:00"), at("2026-01-02T00:00")) is None
    assert next_firing(schedules, at("2026-01-01T00:00")) is None


def test_the_window_is_half_open():
    schedules = [cron("0 * * * *")]
    assert times(schedules, "2026-01-01T10:00", "2026-01-01T12:00") == [at("2026-01-01T11:00"), at("2026-01-01T12:00")]


def test_nothing_fires_before_start_time_or_after_end_time_both_in_the_triggers_zone():
    # W. Europe is UTC+1 in January: the 10:00-12:00 local window is 09:00-11:00 UTC, both ends included.
    schedules = [
        cron(
            "0 * * * *",
            start_time="2026-01-05T10:00:00",
            end_time="2026-01-05T12:00:00",
            time_zone="W. Europe Standard Time",
        )
    ]
    assert times(schedules, "2026-01-05T00:00", "2026-01-06T00:00") == [
        at("2026-01-05T09:00"),
        at("2026-01-05T10:00"),
        at("2026-01-05T11:00"),
    ]
    assert next_firing(schedules, at("2026-01-05T11:00")) is None  # ended


def test_a_start_time_with_an_offset_keeps_it():
    schedules = [cron("0 * * * *", start_time="2026-01-05T10:00:00+00:00", time_zone="Tokyo Standard Time")]
    assert times(schedules, "2026-01-05T00:00", "2026-01-05T11:30")[0] == at("2026-01-05T10:00")
    zulu = [cron("0 * * * *", start_time="2026-01-05T10:00:00Z")]
    assert times(zulu, "2026-01-05T00:00", "2026-01-05T11:30")[0] == at("2026-01-05T10:00")


def test_a_start_time_yaml_parsed_as_a_datetime_is_accepted():
    schedules = [cron("0 * * * *", start_time=datetime(2026, 1, 5, 10, 0))]  # PyYAML gives unquoted dates so
    assert times(schedules, "2026-01-05T00:00", "2026-01-05T11:30") == [at("2026-01-05T10:00"), at("2026-01-05T11:00")]


def test_naive_window_bounds_are_refused():
    with pytest.raises(ValueError, match="aware"):
        firings([cron("0 * * * *")], datetime(2026, 1, 1), at("2026-01-02T00:00"))


def test_the_window_bounds_may_be_in_any_zone_and_results_are_utc():
    paris = ZoneInfo("Europe/Paris")
    found = firings([cron("0 12 * * *")], datetime(2026, 1, 1, 0, 0, tzinfo=paris), datetime(2026, 1, 2, tzinfo=paris))
    assert [f.at for f in found] == [at("2026-01-01T12:00")]
    assert found[0].at.tzinfo == UTC


def test_a_window_longer_than_seven_days_only_considers_the_last_seven():
    found = times([cron("0 18 * * *")], "2026-01-01T00:00", "2026-01-31T00:00")
    assert found == [at(f"2026-01-{day:02}T18:00") for day in range(24, 31)]


# ---- recurrence -------------------------------------------------------------


def test_recurrence_day_fires_at_every_hour_and_minute_pair():
    schedules = [recurrence("day", schedule={"hours": [17, 8], "minutes": [30, 0]})]
    assert times(schedules, "2026-01-05T00:00", "2026-01-06T00:00") == [
        at("2026-01-05T08:00"),
        at("2026-01-05T08:30"),
        at("2026-01-05T17:00"),
        at("2026-01-05T17:30"),
    ]


def test_recurrence_day_with_week_days_only_fires_on_those_days():
    # The shape of Azure's own example: frequency day, hours [8], week_days [monday, tuesday].
    pattern = {"hours": [8], "minutes": [0], "week_days": ["Monday", "tuesday"]}
    schedules = [recurrence("day", schedule=pattern, time_zone="Eastern Standard Time")]
    # 2026-01-05 is a Monday; 08:00 EST is 13:00 UTC.
    assert times(schedules, "2026-01-04T00:00", "2026-01-11T00:00") == [at("2026-01-05T13:00"), at("2026-01-06T13:00")]


def test_recurrence_every_two_days_counts_from_start_time_and_defaults_to_its_time_of_day():
    schedules = [recurrence("day", interval=2, start_time="2026-01-05T07:15:00")]
    assert times(schedules, "2026-01-01T00:00", "2026-01-11T00:00") == [
        at("2026-01-05T07:15"),
        at("2026-01-07T07:15"),
        at("2026-01-09T07:15"),
    ]


def test_recurrence_without_start_time_fires_daily_at_local_midnight():
    schedules = [recurrence("day", time_zone="India Standard Time")]
    assert times(schedules, "2026-01-05T00:00", "2026-01-07T00:00") == [at("2026-01-05T18:30"), at("2026-01-06T18:30")]


def test_recurrence_week_on_week_days_in_the_triggers_zone():
    pattern = {"hours": [9], "minutes": [0], "week_days": ["monday", "wednesday"]}
    schedules = [recurrence("week", schedule=pattern, time_zone="Tokyo Standard Time")]
    # 09:00 in Tokyo is 00:00 UTC the same day.
    assert times(schedules, "2026-01-04T12:00", "2026-01-11T12:00") == [at("2026-01-05T00:00"), at("2026-01-07T00:00")]
    assert times(schedules, "2026-01-11T12:00", "2026-01-18T12:00") == [at("2026-01-12T00:00"), at("2026-01-14T00:00")]


def test_recurrence_every_second_week_counts_weeks_from_start_times_week():
    pattern = {"hours": [8], "minutes": [0], "week_days": ["friday"]}
    schedules = [recurrence("week", interval=2, schedule=pattern, start_time="2026-01-07T00:00:00")]  # a Wednesday
    assert times(schedules, "2026-01-01T00:00", "2026-01-08T00:00") == []
    assert next_firing(schedules, at("2026-01-01T00:00")).at == at("2026-01-09T08:00")
    assert next_firing(schedules, at("2026-01-09T08:00")).at == at("2026-01-23T08:00")


def test_recurrence_week_without_week_days_uses_start_times_weekday():
    schedules = [recurrence("week", start_time="2026-01-07T18:00:00")]  # Wednesday 18:00
    assert next_firing(schedules, at("2026-01-08T00:00")).at == at("2026-01-14T18:00")


def test_recurrence_month_skips_months_without_the_day():
    schedules = [recurrence("month", schedule={"hours": [6], "minutes": [0], "month_days": [31]})]
    assert next_firing(schedules, at("2026-01-31T07:00")).at == at("2026-03-31T06:00")  # no 31 February


def test_recurrence_month_defaults_to_start_times_day_every_interval_months():
    schedules = [recurrence("month", interval=3, start_time="2026-01-15T12:00:00")]
    assert next_firing(schedules, at("2026-01-15T12:00")).at == at("2026-04-15T12:00")


def test_recurrence_minute_counts_from_start_time():
    schedules = [recurrence("minute", interval=15, start_time="2026-01-05T10:07:00")]
    assert times(schedules, "2026-01-05T10:00", "2026-01-05T11:00") == [
        at("2026-01-05T10:07"),
        at("2026-01-05T10:22"),
        at("2026-01-05T10:37"),
        at("2026-01-05T10:52"),
    ]


def test_recurrence_hour_counts_elapsed_hours_across_a_dst_change():
    schedules = [recurrence("hour", interval=2, start_time="2026-03-07T00:00:00", time_zone="America/Los_Angeles")]
    found = times(schedules, "2026-03-08T07:00", "2026-03-08T13:00")
    assert found == [at("2026-03-08T08:00"), at("2026-03-08T10:00"), at("2026-03-08T12:00")]  # 2 real hours apart


# ---- due_action, next_firing, input shapes ----------------------------------


def test_due_action_is_the_latest_firing_when_start_and_stop_both_fired():
    schedules = [cron("0 8 * * *", action="start"), cron("0 18 * * *", action="stop")]
    assert due_action(schedules, at("2026-01-05T00:00"), at("2026-01-05T20:00")) == Firing(
        at("2026-01-05T18:00"), "stop", 1
    )
    assert due_action(schedules, at("2026-01-05T00:00"), at("2026-01-06T09:00")) == Firing(
        at("2026-01-06T08:00"), "start", 0
    )
    # Server down for two weeks: still the latest, found within the last 7 days.
    assert due_action(schedules, at("2025-12-20T00:00"), at("2026-01-06T12:00")).action == "start"
    assert due_action(schedules, at("2026-01-05T09:00"), at("2026-01-05T10:00")) is None


def test_due_action_on_a_tie_takes_the_later_schedule_in_the_list():
    schedules = [cron("0 18 * * *", action="start"), cron("0 18 * * *", action="stop")]
    assert due_action(schedules, at("2026-01-05T00:00"), at("2026-01-05T20:00")).index == 1


def test_next_firing_is_the_earliest_across_schedules_strictly_after():
    schedules = [cron("0 18 * * *", action="stop"), recurrence("day", schedule={"hours": [8], "minutes": [0]})]
    assert next_firing(schedules, at("2026-01-05T12:00")) == Firing(at("2026-01-05T18:00"), "stop", 0)
    assert next_firing(schedules, at("2026-01-05T18:00")) == Firing(at("2026-01-06T08:00"), "start", 1)


def test_next_firing_looks_far_ahead_for_a_yearly_cron():
    assert next_firing([cron("0 0 1 1 *")], at("2026-01-01T00:00")).at == at("2027-01-01T00:00")


def test_schedules_may_be_models_dicts_or_the_schedules_block():
    entries = [cron("0 18 * * *")]
    as_models = [ComputeStartStopSchedule.model_validate(e) for e in entries]
    block = ComputeSchedules.model_validate({"compute_start_stop": entries})
    window = (at("2026-01-05T00:00"), at("2026-01-06T00:00"))
    expected = [Firing(at("2026-01-05T18:00"), "stop", 0)]
    for shape in (entries, as_models, block, {"compute_start_stop": entries}):
        assert firings(shape, *window) == expected
    assert firings(None, *window) == [] and next_firing([], window[0]) is None


# ---- check_schedules --------------------------------------------------------


def test_check_schedules_accepts_good_schedules():
    schedules = [
        cron("0 18 * * 1-5", time_zone="Pacific Standard Time", start_time="2026-01-01T00:00:00"),
        recurrence("week", schedule={"hours": [8], "minutes": [0], "week_days": ["monday"]}, time_zone="UTC"),
    ]
    assert check_schedules(schedules) == []
    assert check_schedules({"compute_start_stop": schedules}) == []
    assert check_schedules(None) == []


def test_check_schedules_names_the_field_of_a_bad_cron_expression():
    problems = check_schedules([cron("0 18 * * *"), cron("61 * * * *")])
    assert len(problems) == 1
    assert problems[0].startswith("schedules.compute_start_stop[1].trigger.expression: '61 * * * *'")
    assert "not a valid cron expression" in problems[0]


def test_check_schedules_flags_a_cron_that_matches_no_date():
    (problem,) = check_schedules([cron("0 0 30 2 *")])
    assert problem.startswith("schedules.compute_start_stop[0].trigger.expression:") and "no date" in problem


def test_check_schedules_names_the_field_of_an_unknown_time_zone():
    (problem,) = check_schedules([cron("0 18 * * *", time_zone="Pacific Time")])
    assert problem.startswith("schedules.compute_start_stop[0].trigger.time_zone: unknown time zone 'Pacific Time'")


def test_check_schedules_flags_end_time_before_start_time_and_bad_dates():
    problems = check_schedules(
        [
            cron("0 18 * * *", start_time="2026-02-01T00:00:00", end_time="2026-01-01T00:00:00"),
            cron("0 18 * * *", start_time="tomorrow"),
        ]
    )
    assert problems[0].startswith("schedules.compute_start_stop[0].trigger.end_time:") and "before" in problems[0]
    assert problems[1].startswith("schedules.compute_start_stop[1].trigger.start_time: 'tomorrow'")


def test_check_schedules_flags_patterns_that_cannot_apply():
    problems = check_schedules(
        [
            recurrence("hour", schedule={"hours": [8], "minutes": [0]}),
            recurrence("day", schedule={"hours": [], "minutes": [0]}),
        ]
    )
    assert problems[0].startswith("schedules.compute_start_stop[0].trigger.schedule: applies to day, week and month")
    assert problems[1].startswith("schedules.compute_start_stop[1].trigger.schedule.hours: is empty")


def test_check_schedules_reports_dict_validation_errors_with_their_path():
    problems = check_schedules([{"action": "pause", "trigger": {"type": "cron", "expression": "0 18 * * *"}}])
    assert problems and problems[0].startswith("schedules.compute_start_stop[0].action:")


def test_check_schedules_also_checks_disabled_schedules():
    assert check_schedules([{**cron("0 18 * * *", time_zone="Nowhere"), "state": "disabled"}]) != []


def test_firings_over_a_full_week_of_minutes_stays_cheap():
    found = firings([cron("* * * * *")], at("2026-01-01T00:00"), at("2026-01-31T00:00"))
    assert len(found) == 7 * 24 * 60
    assert found[0].at == at("2026-01-24T00:01") and timedelta(minutes=1) == found[1].at - found[0].at
