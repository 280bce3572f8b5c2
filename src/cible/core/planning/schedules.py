"""When a compute instance's start/stop schedules fire (``schedules.compute_start_stop``).

Pure: no clock, no database. The caller passes the window it cares about (the
reconciler: "since I last looked"; ``compute show``: "from now on").

Wall-clock rules, all in the trigger's time zone:
- A cron expression or a recurrence's hours x minutes name *wall-clock* times, so
  "0 18 * * *" in Pacific Standard Time is 18:00 in Los Angeles in winter and in summer.
- A wall time skipped by a spring-forward change fires when the skipped hour ends
  (02:30 on the change day fires at 03:00 DST), the way cron does.
- A wall time repeated by a fall-back change fires once, at its first occurrence.
- minute/hour recurrences count elapsed time from their anchor, not wall time:
  "every 2 hours" stays 2 real hours apart across a change.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, croniter
from pydantic import ValidationError

from cible.core.models.compute_schedules import ComputeSchedules, ComputeStartStopSchedule, CronTrigger

UTC = timezone.utc
MAX_WINDOW = timedelta(days=7)  # a server down longer than this only replays the last week
LOOK_AHEAD = timedelta(days=400)  # next_firing gives up after this (covers yearly crons)
# Anchor of a recurrence without start_time: intervals count from 2000-01-01 (its day,
# its Monday-started week, its month), at local midnight for minute/hour frequencies.
DEFAULT_ANCHOR = date(2000, 1, 1)
WEEK_DAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]

# Windows time zone ids (what Azure ML writes) -> IANA, from CLDR windowsZones.xml (territory 001).
# fmt: off
WINDOWS_ZONES = {
    "Dateline Standard Time": "Etc/GMT+12", "UTC-11": "Etc/GMT+11", "Aleutian Standard Time": "America/Adak",
    "Hawaiian Standard Time": "Pacific/Honolulu", "Marquesas Standard Time": "Pacific/Marquesas",
    "Alaskan Standard Time": "America/Anchorage", "UTC-09": "Etc/GMT+9", "UTC-08": "Etc/GMT+8",
    "Pacific Standard Time (Mexico)": "America/Tijuana", "Pacific Standard Time": "America/Los_Angeles",
    "US Mountain Standard Time": "America/Phoenix", "Mountain Standard Time (Mexico)": "America/Mazatlan",
    "Mountain Standard Time": "America/Denver", "Yukon Standard Time": "America/Whitehorse",
    "Central America Standard Time": "America/Guatemala", "Central Standard Time": "America/Chicago",
    "Easter Island Standard Time": "Pacific/Easter", "Central Standard Time (Mexico)": "America/Mexico_City",
    "Canada Central Standard Time": "America/Regina", "SA Pacific Standard Time": "America/Bogota",
    "Eastern Standard Time (Mexico)": "America/Cancun", "Eastern Standard Time": "America/New_York",
    "Haiti Standard Time": "America/Port-au-Prince", "Cuba Standard Time": "America/Havana",
    "US Eastern Standard Time": "America/Indiana/Indianapolis", "Turks And Caicos Standard Time": "America/Grand_Turk",
    "Paraguay Standard Time": "America/Asuncion", "Atlantic Standard Time": "America/Halifax",
    "Venezuela Standard Time": "America/Caracas", "Central Brazilian Standard Time": "America/Cuiaba",
    "SA Western Standard Time": "America/La_Paz", "Pacific SA Standard Time": "America/Santiago",
    "Newfoundland Standard Time": "America/St_Johns", "Tocantins Standard Time": "America/Araguaina",
    "E. South America Standard Time": "America/Sao_Paulo", "SA Eastern Standard Time": "America/Cayenne",
    "Argentina Standard Time": "America/Argentina/Buenos_Aires", "Greenland Standard Time": "America/Nuuk",
    "Montevideo Standard Time": "America/Montevideo", "Magallanes Standard Time": "America/Punta_Arenas",
    "Saint Pierre Standard Time": "America/Miquelon", "Bahia Standard Time": "America/Bahia",
    "UTC-02": "Etc/GMT+2", "Azores Standard Time": "Atlantic/Azores", "Cape Verde Standard Time": "Atlantic/Cape_Verde",
    "UTC": "Etc/UTC", "GMT Standard Time": "Europe/London", "Greenwich Standard Time": "Atlantic/Reykjavik",
    "Sao Tome Standard Time": "Africa/Sao_Tome", "Morocco Standard Time": "Africa/Casablanca",
    "W. Europe Standard Time": "Europe/Berlin", "Central Europe Standard Time": "Europe/Budapest",
    "Romance Standard Time": "Europe/Paris", "Central European Standard Time": "Europe/Warsaw",
    "W. Central Africa Standard Time": "Africa/Lagos", "Jordan Standard Time": "Asia/Amman",
    "GTB Standard Time": "Europe/Bucharest", "Middle East Standard Time": "Asia/Beirut",
    "Egypt Standard Time": "Africa/Cairo", "E. Europe Standard Time": "Europe/Chisinau",
    "Syria Standard Time": "Asia/Damascus", "West Bank Standard Time": "Asia/Hebron",
    "South Africa Standard Time": "Africa/Johannesburg", "FLE Standard Time": "Europe/Kyiv",
    "Israel Standard Time": "Asia/Jerusalem", "South Sudan Standard Time": "Africa/Juba",
    "Kaliningrad Standard Time": "Europe/Kaliningrad", "Sudan Standard Time": "Africa/Khartoum",
    "Libya Standard Time": "Africa/Tripoli", "Namibia Standard Time": "Africa/Windhoek",
    "Arabic Standard Time": "Asia/Baghdad", "Turkey Standard Time": "Europe/Istanbul",
    "Arab Standard Time": "Asia/Riyadh", "Belarus Standard Time": "Europe/Minsk",
    "Russian Standard Time": "Europe/Moscow", "E. Africa Standard Time": "Africa/Nairobi",
    "Volgograd Standard Time": "Europe/Volgograd", "Iran Standard Time": "Asia/Tehran",
    "Arabian Standard Time": "Asia/Dubai", "Astrakhan Standard Time": "Europe/Astrakhan",
    "Azerbaijan Standard Time": "Asia/Baku", "Russia Time Zone 3": "Europe/Samara",
    "Mauritius Standard Time": "Indian/Mauritius", "Saratov Standard Time": "Europe/Saratov",
    "Georgian Standard Time": "Asia/Tbilisi", "Caucasus Standard Time": "Asia/Yerevan",
    "Afghanistan Standard Time": "Asia/Kabul", "West Asia Standard Time": "Asia/Tashkent",
    "Ekaterinburg Standard Time": "Asia/Yekaterinburg", "Pakistan Standard Time": "Asia/Karachi",
    "Qyzylorda Standard Time": "Asia/Qyzylorda", "India Standard Time": "Asia/Kolkata",
    "Sri Lanka Standard Time": "Asia/Colombo", "Nepal Standard Time": "Asia/Kathmandu",
    "Central Asia Standard Time": "Asia/Bishkek", "Bangladesh Standard Time": "Asia/Dhaka",
    "Omsk Standard Time": "Asia/Omsk", "Myanmar Standard Time": "Asia/Yangon",
    "SE Asia Standard Time": "Asia/Bangkok", "Altai Standard Time": "Asia/Barnaul",
    "W. Mongolia Standard Time": "Asia/Hovd", "North Asia Standard Time": "Asia/Krasnoyarsk",
    "N. Central Asia Standard Time": "Asia/Novosibirsk", "Tomsk Standard Time": "Asia/Tomsk",
    "China Standard Time": "Asia/Shanghai", "North Asia East Standard Time": "Asia/Irkutsk",
    "Singapore Standard Time": "Asia/Singapore", "W. Australia Standard Time": "Australia/Perth",
    "Taipei Standard Time": "Asia/Taipei", "Ulaanbaatar Standard Time": "Asia/Ulaanbaatar",
    "Aus Central W. Standard Time": "Australia/Eucla", "Transbaikal Standard Time": "Asia/Chita",
    "Tokyo Standard Time": "Asia/Tokyo", "North Korea Standard Time": "Asia/Pyongyang",
    "Korea Standard Time": "Asia/Seoul", "Yakutsk Standard Time": "Asia/Yakutsk",
    "Cen. Australia Standard Time": "Australia/Adelaide", "AUS Central Standard Time": "Australia/Darwin",
    "E. Australia Standard Time": "Australia/Brisbane", "AUS Eastern Standard Time": "Australia/Sydney",
    "West Pacific Standard Time": "Pacific/Port_Moresby", "Tasmania Standard Time": "Australia/Hobart",
    "Vladivostok Standard Time": "Asia/Vladivostok", "Lord Howe Standard Time": "Australia/Lord_Howe",
    "Bougainville Standard Time": "Pacific/Bougainville", "Russia Time Zone 10": "Asia/Srednekolymsk",
    "Magadan Standard Time": "Asia/Magadan", "Norfolk Standard Time": "Pacific/Norfolk",
    "Sakhalin Standard Time": "Asia/Sakhalin", "Central Pacific Standard Time": "Pacific/Guadalcanal",
    "Russia Time Zone 11": "Asia/Kamchatka", "New Zealand Standard Time": "Pacific/Auckland",
    "UTC+12": "Etc/GMT-12", "Fiji Standard Time": "Pacific/Fiji", "Chatham Islands Standard Time": "Pacific/Chatham",
    "UTC+13": "Etc/GMT-13", "Tonga Standard Time": "Pacific/Tongatapu", "Samoa Standard Time": "Pacific/Apia",
    "Line Islands Standard Time": "Pacific/Kiritimati",
}
# fmt: on
_WINDOWS_BY_LOWER = {name.lower(): iana for name, iana in WINDOWS_ZONES.items()}


@dataclass(frozen=True)
class Firing:
    at: datetime  # aware, UTC
    action: str  # "start" | "stop"
    index: int  # position in schedules.compute_start_stop


def resolve_time_zone(name: str | None) -> ZoneInfo:
    """The zone of a trigger: None is UTC; Windows ids (Azure's) and IANA names are accepted."""
    if name is None or not name.strip():
        return ZoneInfo("UTC")
    name = name.strip()
    iana = _WINDOWS_BY_LOWER.get(name.lower(), name)
    try:
        return ZoneInfo(iana)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a folder such as "America"
        raise ValueError(
            f"unknown time zone {name!r}; use a Windows time zone id such as 'Pacific Standard Time', "
            "'W. Europe Standard Time' or 'UTC', or an IANA name such as 'America/Los_Angeles'"
        ) from None


def firings(schedules: Any, after: datetime, until: datetime) -> list[Firing]:
    """Every enabled schedule's firings in (after, until], oldest first (ties: list order).
    Only the last 7 days of a longer window count: replaying more only wastes work."""
    after, until = _utc(after, "after"), _utc(until, "until")
    after = max(after, until - MAX_WINDOW)
    found = [
        Firing(at, schedule.action, index)
        for index, schedule in enumerate(_parse(schedules))
        if schedule.state == "enabled"
        for at in _instants(schedule, after, until)
    ]
    return sorted(found, key=lambda f: (f.at, f.index))


def due_action(schedules: Any, after: datetime, until: datetime) -> Firing | None:
    """The latest firing in (after, until]: what the instance should do now. When a start and a
    stop both fired while nobody looked, the later one wins (same instant: the later schedule)."""
    found = firings(schedules, after, until)
    return found[-1] if found else None


def next_firing(schedules: Any, after: datetime) -> Firing | None:
    """The first firing strictly after `after`, looking ahead LOOK_AHEAD (ties: list order)."""
    after = _utc(after, "after")
    best: Firing | None = None
    for index, schedule in enumerate(_parse(schedules)):
        if schedule.state != "enabled":
            continue
        at = next(_instants(schedule, after, after + LOOK_AHEAD), None)
        if at is not None and (best is None or at < best.at):
            best = Firing(at, schedule.action, index)
    return best


def check_schedules(schedules: Any) -> list[str]:
    """What makes a schedule unusable, one message per problem, each naming its field path.
    Disabled schedules are checked too: enabling one later must not be what breaks it."""
    items = schedules.compute_start_stop if isinstance(schedules, ComputeSchedules) else schedules
    if isinstance(items, dict):
        items = items.get("compute_start_stop") or []
    problems: list[str] = []
    for index, item in enumerate(items or []):
        path = f"schedules.compute_start_stop[{index}]"
        if not isinstance(item, ComputeStartStopSchedule):
            try:
                item = ComputeStartStopSchedule.model_validate(item)
            except ValidationError as error:
                for detail in error.errors():
                    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in detail["loc"])
                    problems.append(f"{path}{where}: {detail['msg']}")
                continue
        problems += [f"{path}.trigger.{field}: {message}" for field, message in _trigger_problems(item.trigger)]
    return problems


# ---- internals --------------------------------------------------------------


def _trigger_problems(trigger: Any) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    try:
        zone = resolve_time_zone(trigger.time_zone)
    except ValueError as error:
        problems.append(("time_zone", str(error)))
        zone = ZoneInfo("UTC")  # still check the times, as if in UTC
    bounds = {}
    for field in ("start_time", "end_time"):
        try:
            bounds[field] = _parse_time(getattr(trigger, field), zone)
        except ValueError:
            problems.append((field, f"{getattr(trigger, field)!r} is not an ISO 8601 date-time (2024-03-10T08:00:00)"))
    start, end = bounds.get("start_time"), bounds.get("end_time")
    if start is not None and end is not None and end < start:
        problems.append(("end_time", f"{trigger.end_time} is before start_time {trigger.start_time}"))
    if isinstance(trigger, CronTrigger):
        try:
            croniter(trigger.expression, datetime(2000, 1, 1)).get_next(datetime)
        except CroniterBadDateError:
            problems.append(("expression", f"{trigger.expression!r} matches no date (such as 30 February)"))
        except (ValueError, KeyError) as error:  # CroniterBadCronError is a ValueError
            problems.append(("expression", f"{trigger.expression!r} is not a valid cron expression: {error}"))
        return problems
    pattern = trigger.schedule
    if pattern is not None and trigger.frequency in ("minute", "hour"):
        problems.append(("schedule", f"applies to day, week and month frequencies, not {trigger.frequency}; remove it"))
    elif pattern is not None:
        for field in ("hours", "minutes", "week_days", "month_days"):
            if getattr(pattern, field) == []:
                problems.append((f"schedule.{field}", "is empty, so the schedule would never fire; list at least one"))
    return problems


def _parse(schedules: Any) -> list[ComputeStartStopSchedule]:
    """A list of schedules (models or dicts), a ComputeSchedules, its dict, or None."""
    if isinstance(schedules, ComputeSchedules):
        return list(schedules.compute_start_stop)
    if isinstance(schedules, dict):
        schedules = schedules.get("compute_start_stop") or []
    return [
        s if isinstance(s, ComputeStartStopSchedule) else ComputeStartStopSchedule.model_validate(s)
        for s in schedules or []
    ]


def _utc(moment: datetime, name: str) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be an aware datetime, got naive {moment.isoformat()}")
    return moment.astimezone(UTC)


def _parse_time(text: str | None, zone: ZoneInfo) -> datetime | None:
    """start_time/end_time: naive means wall time in the trigger's zone; an offset is kept."""
    if text is None:
        return None
    text = text.strip()
    moment = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)  # 3.10: no "Z"
    return _instant(moment, zone) if moment.tzinfo is None else moment.astimezone(UTC)


def _instant(wall: datetime, zone: ZoneInfo) -> datetime:
    """The UTC instant of a naive wall time: first occurrence if repeated, end of the gap if skipped."""
    moment = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if moment.astimezone(zone).replace(tzinfo=None) == wall:
        return moment
    # Skipped: fold=0 lands after the gap, fold=1 before it. Bisect (in seconds) for the first
    # instant whose wall clock is past `wall`: the moment the clocks jumped.
    low = int(wall.replace(tzinfo=zone, fold=1).timestamp())
    high = int(moment.timestamp())
    while high - low > 1:
        middle = (low + high) // 2
        if datetime.fromtimestamp(middle, zone).replace(tzinfo=None) > wall:
            high = middle
        else:
            low = middle
    return datetime.fromtimestamp(high, UTC)


def _instants(schedule: ComputeStartStopSchedule, after: datetime, until: datetime) -> Iterator[datetime]:
    """One schedule's firings in (after, until] within its start_time/end_time, ascending, no repeats."""
    trigger = schedule.trigger
    zone = resolve_time_zone(trigger.time_zone)
    start, end = _parse_time(trigger.start_time, zone), _parse_time(trigger.end_time, zone)
    since = after if start is None else max(after, start)
    upper = until if end is None else min(until, end)
    if isinstance(trigger, CronTrigger):
        ticks = _cron_ticks(trigger.expression, zone, since)
    elif trigger.frequency in ("minute", "hour"):
        ticks = _elapsed_ticks(trigger, zone, start, since)
    else:
        ticks = _calendar_ticks(trigger, zone, start, since, upper)
    last = None
    for at in ticks:
        if at > upper:  # ticks never go backwards (see _instant), so nothing later can fit
            return
        if at > after and (start is None or at >= start) and at != last:
            yield at
            last = at


def _local(moment: datetime, zone: ZoneInfo) -> datetime:
    return moment.astimezone(zone).replace(tzinfo=None)


def _cron_ticks(expression: str, zone: ZoneInfo, since: datetime) -> Iterator[datetime]:
    # croniter walks naive wall times (no DST logic of its own); _instant maps them to UTC.
    # Start a minute early so a firing exactly at `since` (= start_time) is not skipped.
    walk = croniter(expression, _local(since, zone) - timedelta(minutes=1))
    while True:
        try:
            yield _instant(walk.get_next(datetime), zone)
        except CroniterBadDateError:  # no further matching date (e.g. "0 0 30 2 *")
            return


def _elapsed_ticks(trigger: Any, zone: ZoneInfo, start: datetime | None, since: datetime) -> Iterator[datetime]:
    step = timedelta(minutes=trigger.interval) * (60 if trigger.frequency == "hour" else 1)
    anchor = start or _instant(datetime.combine(DEFAULT_ANCHOR, time()), zone)
    count = max(0, -((anchor - since) // step))  # ceil((since - anchor) / step)
    while True:
        yield anchor + count * step
        count += 1


def _calendar_ticks(
    trigger: Any, zone: ZoneInfo, start: datetime | None, since: datetime, upper: datetime
) -> Iterator[datetime]:
    """day/week/month: the wall times of each chosen local date, date by date."""
    local_start = _local(start, zone) if start is not None else None
    anchor = local_start.date() if local_start else DEFAULT_ANCHOR
    pattern = trigger.schedule
    if pattern is not None:
        times = sorted({time(hour, minute) for hour in pattern.hours for minute in pattern.minutes})
    else:  # no pattern: the time of day of start_time (seconds included, so start_time itself fires)
        times = [local_start.time() if local_start else time()]
    week_days = {WEEK_DAYS.index(d) for d in pattern.week_days} if pattern and pattern.week_days is not None else None
    month_days = set(pattern.month_days) if pattern and pattern.month_days is not None else None
    if trigger.frequency == "week" and week_days is None:
        week_days = {local_start.weekday() if local_start else 0}  # start_time's weekday, else Monday
    if trigger.frequency == "month" and month_days is None:
        month_days = {anchor.day if local_start else 1}  # start_time's day, else the 1st
    # A day early: a time skipped or repeated near midnight can move across the date line.
    day, last_day = _local(since, zone).date() - timedelta(days=1), _local(upper, zone).date() + timedelta(days=1)
    while day <= last_day:
        if _in_period(trigger.frequency, trigger.interval, anchor, day) and (
            (week_days is None or day.weekday() in week_days) and (month_days is None or day.day in month_days)
        ):
            for wall in times:
                yield _instant(datetime.combine(day, wall), zone)
        day += timedelta(days=1)


def _in_period(frequency: str, interval: int, anchor: date, day: date) -> bool:
    """Whether `day` falls in a counted period: every `interval`th day, week or month from the anchor's."""
    if frequency == "day":
        periods = (day - anchor).days
    elif frequency == "week":  # weeks start on Monday
        periods = (day - (anchor - timedelta(days=anchor.weekday()))).days // 7
    else:
        periods = (day.year - anchor.year) * 12 + day.month - anchor.month
    return periods % interval == 0
