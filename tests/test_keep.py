"""lib/keep.py: retention by age, against a reference written apart, and the worked
examples of docs/retention.md.

The reference groups the items by bucket, computed another way (an hour is its
local hour and UTC offset, a week its Monday), and keeps the newest item of the
N newest groups, and the oldest item when there are fewer than N groups.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lib.keep import (
    EMPTY_POLICY,
    KINDS,
    PROTECTED,
    REASONS,
    Item,
    KeepRules,
    decide,
    newest_first,
    preview,
    protect,
)

BERLIN, NEW_YORK = ZoneInfo("Europe/Berlin"), ZoneInfo("America/New_York")
ZONES = [ZoneInfo("UTC"), BERLIN, NEW_YORK, ZoneInfo("Australia/Lord_Howe"),
         ZoneInfo("Asia/Kolkata")]


# --- the reference ---------------------------------------------------------------------------

REFERENCE_KEYS = {
    "hourly": lambda t: (t.replace(minute=0, second=0, microsecond=0, tzinfo=None),
                         t.utcoffset()),
    "daily": lambda t: t.date(),
    "weekly": lambda t: t.date() - timedelta(days=t.weekday()),
    "monthly": lambda t: t.strftime("%Y-%m"),
    "yearly": lambda t: t.year,
}


def reference(items: list[Item], rules: KeepRules, tz) -> set:
    ordered = sorted(items, key=lambda item: (item.when, item.id), reverse=True)
    if not any(rules.counts().values()):
        return {item.id for item in items}
    keep = {item.id for item in ordered[:rules.last]}
    for kind, key in REFERENCE_KEYS.items():
        count = getattr(rules, kind)
        if not count:
            continue
        groups: dict = {}
        for item in ordered:
            groups.setdefault(key(item.when.astimezone(tz)), []).append(item)
        newest_groups = sorted(groups.values(), key=lambda g: (g[0].when, g[0].id), reverse=True)
        keep |= {group[0].id for group in newest_groups[:count]}
        if ordered and len(groups) < count:
            keep.add(ordered[-1].id)
    return keep


# --- strategies --------------------------------------------------------------------------------

UNITS = [timedelta(minutes=1), timedelta(minutes=17), timedelta(hours=1), timedelta(hours=7),
         timedelta(days=1), timedelta(days=5), timedelta(days=40)]
# Berlin's and New York's clocks going forward and back in 2025, in UTC.
TRANSITIONS = [datetime(2025, 3, 30, 1, tzinfo=UTC), datetime(2025, 10, 26, 1, tzinfo=UTC),
               datetime(2025, 3, 9, 7, tzinfo=UTC), datetime(2025, 11, 2, 6, tzinfo=UTC)]


def _items(draw, base: datetime, unit: timedelta, most: int) -> list[Item]:
    steps = draw(st.lists(st.integers(0, most), max_size=30))
    ids = draw(st.permutations(range(len(steps))))
    return [Item(pk, base + unit * step) for pk, step in zip(ids, steps, strict=True)]


@st.composite
def histories(draw) -> list[Item]:
    """Snapshots a few minutes to a few years apart; some share a time."""
    base = draw(st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1),
                             timezones=st.just(UTC)))
    return _items(draw, base, draw(st.sampled_from(UNITS)), 400)


@st.composite
def dst_histories(draw) -> list[Item]:
    """Snapshots around a change of the clocks in Berlin or New York."""
    unit = draw(st.sampled_from([timedelta(minutes=1), timedelta(minutes=7), *UNITS[1:3]]))
    before = unit * draw(st.integers(0, 150))
    return _items(draw, draw(st.sampled_from(TRANSITIONS)) - before, unit, 300)


counts = st.integers(0, 6)
rules_ = st.builds(KeepRules, **{kind: counts for kind in KINDS})
some_rules = rules_.filter(lambda rules: not rules.empty)
zones = st.sampled_from(ZONES)


# --- properties ---------------------------------------------------------------------------------

@settings(max_examples=300)
@given(histories(), rules_, zones)
def test_it_keeps_what_the_reference_keeps(items, rules, tz):
    assert decide(items, rules, tz=tz).keep == reference(items, rules, tz)


@settings(max_examples=300)
@given(dst_histories(), rules_, st.sampled_from([BERLIN, NEW_YORK]))
def test_it_keeps_what_the_reference_keeps_across_a_change_of_the_clocks(items, rules, tz):
    assert decide(items, rules, tz=tz).keep == reference(items, rules, tz)


@given(histories(), rules_, zones)
def test_kept_and_forgotten_split_the_items(items, rules, tz):
    keep, forget, reasons = decide(items, rules, tz=tz)
    assert keep | forget == {item.id for item in items}
    assert not keep & forget
    assert set(reasons) == keep
    assert all(why and set(why) <= REASONS for why in reasons.values())


@given(histories(), st.integers(1, 40), zones)
def test_last_n_keeps_exactly_the_newest_n(items, n, tz):
    keep = decide(items, KeepRules(last=n), tz=tz).keep
    assert keep == {item.id for item in newest_first(items)[:n]}
    assert len(keep) == min(n, len(items))


@given(histories(), some_rules, zones)
def test_the_newest_is_always_kept(items, rules, tz):
    if items:
        assert newest_first(items)[0].id in decide(items, rules, tz=tz).keep


@given(histories(), some_rules, st.sampled_from(KINDS), st.integers(1, 5), zones)
def test_raising_a_count_never_forgets_what_was_kept(items, rules, kind, more, tz):
    raised = KeepRules(**{**rules.counts(), kind: getattr(rules, kind) + more})
    assert decide(items, rules, tz=tz).keep <= decide(items, raised, tz=tz).keep


@given(histories(), zones)
def test_an_empty_policy_keeps_everything(items, tz):
    keep, forget, reasons = decide(items, KeepRules(), tz=tz)
    assert keep == {item.id for item in items} and not forget
    assert set(reasons.values()) <= {(EMPTY_POLICY,)}


@given(histories(), rules_, zones, st.randoms())
def test_the_order_given_changes_nothing(items, rules, tz, random):
    shuffled = list(items)
    random.shuffle(shuffled)
    assert decide(shuffled, rules, tz=tz) == decide(items, rules, tz=tz)


@given(st.data(), histories(), rules_, zones)
def test_protected_ids_are_never_forgotten(data, items, rules, tz):
    ids = [item.id for item in items]
    protected = data.draw(st.sets(st.sampled_from(ids))) if ids else set()
    decision = decide(items, rules, tz=tz)
    shielded = protect(decision, protected | {"not-an-item"})
    assert not shielded.forget & protected
    assert shielded.keep == decision.keep | protected
    assert shielded.forget == decision.forget - protected
    assert set(shielded.reasons) == shielded.keep
    assert all(PROTECTED in shielded.reasons[pk] for pk in protected)
    expected = [item for item in newest_first(items) if item.id in shielded.forget]
    assert preview(items, rules, protected, tz) == expected


# --- the worked examples of docs/retention.md -------------------------------------------------

def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def kept(items: list[Item], rules: KeepRules, tz) -> dict:
    return decide(items, rules, tz=tz).reasons


def test_example_1_the_last_two_and_one_a_day():
    items = [Item(1, utc(2025, 3, 3, 9)), Item(2, utc(2025, 3, 3, 21)),
             Item(3, utc(2025, 3, 4, 9)), Item(4, utc(2025, 3, 4, 21)),
             Item(5, utc(2025, 3, 5, 9)), Item(6, utc(2025, 3, 5, 21)),
             Item(7, utc(2025, 3, 6, 9))]
    assert kept(items, KeepRules(last=2, daily=3), UTC) == {
        7: ("last", "daily"), 6: ("last", "daily"), 4: ("daily",)}
    # Five days asked, four there: the oldest is kept as well.
    assert kept(items, KeepRules(last=2, daily=5), UTC) == {
        7: ("last", "daily"), 6: ("last", "daily"), 4: ("daily",), 2: ("daily",),
        1: ("oldest-daily",)}


def test_example_2_weeks_and_months():
    days = [(2024, 12, 28), (2024, 12, 29), (2025, 1, 5), (2025, 1, 12), (2025, 1, 19),
            (2025, 1, 26), (2025, 2, 2), (2025, 2, 9), (2025, 2, 16)]
    items = [Item(pk, utc(*day, 2)) for pk, day in enumerate(days, start=1)]
    assert kept(items, KeepRules(weekly=4, monthly=6), UTC) == {
        9: ("weekly", "monthly"), 8: ("weekly",), 7: ("weekly",), 6: ("weekly", "monthly"),
        2: ("monthly",), 1: ("oldest-monthly",)}


def test_example_3_berlin_when_the_clocks_go_back():
    items = [Item(1, utc(2025, 10, 25, 21, 30)), Item(2, utc(2025, 10, 25, 22, 30)),
             Item(3, utc(2025, 10, 26, 0, 15)), Item(4, utc(2025, 10, 26, 0, 45)),
             Item(5, utc(2025, 10, 26, 1, 15)), Item(6, utc(2025, 10, 26, 1, 45))]
    rules = KeepRules(hourly=3, daily=2)
    # 02:45 CEST and 02:45 CET are an hour apart: two hours, each keeps one.
    # 22:30 UTC is 00:30 on the 26th in Berlin, so the 25th's newest is 21:30 UTC.
    assert kept(items, rules, BERLIN) == {
        6: ("hourly", "daily"), 4: ("hourly",), 2: ("hourly",), 1: ("daily",)}
    assert kept(items, rules, UTC) == {
        6: ("hourly", "daily"), 4: ("hourly",), 2: ("hourly", "daily")}


# --- more clocks and calendars -----------------------------------------------------------------

def test_new_york_when_the_clocks_go_forward():
    # 01:30 EST and 03:30 EDT on 9 March 2025 are one hour apart, in two hours of one day.
    items = [Item(1, utc(2025, 3, 9, 6, 30)), Item(2, utc(2025, 3, 9, 7, 30))]
    assert decide(items, KeepRules(hourly=5), tz=NEW_YORK).keep == {1, 2}
    assert decide(items, KeepRules(daily=1), tz=NEW_YORK).keep == {2}


def test_new_york_when_the_clocks_go_back():
    # 01:30 EDT and 01:30 EST on 2 November 2025: the same wall clock, two hours.
    items = [Item(0, utc(2025, 11, 2, 4, 30)), Item(1, utc(2025, 11, 2, 5, 30)),
             Item(2, utc(2025, 11, 2, 6, 30)), Item(3, utc(2025, 11, 2, 6, 40))]
    assert decide(items, KeepRules(hourly=2), tz=NEW_YORK).keep == {1, 3}


def test_an_iso_week_crosses_the_new_year():
    # Monday 30 December 2024 is in week 1 of 2025, with Sunday 5 January.
    items = [Item(1, utc(2024, 12, 29, 12)), Item(2, utc(2024, 12, 30, 12)),
             Item(3, utc(2025, 1, 5, 12))]
    assert decide(items, KeepRules(weekly=2), tz=UTC).keep == {1, 3}
    assert decide(items, KeepRules(yearly=1), tz=UTC).keep == {3}


def test_a_week_a_year_later_is_another_week():
    items = [Item(0, utc(2023, 12, 20)), Item(1, utc(2024, 1, 3)), Item(2, utc(2025, 1, 1))]
    assert decide(items, KeepRules(weekly=2), tz=UTC).keep == {1, 2}


def test_equal_times_are_ordered_by_id():
    when = utc(2025, 1, 1)
    assert decide([Item(1, when), Item(2, when)], KeepRules(last=1), tz=UTC).keep == {2}


def test_nothing_in_nothing_out():
    assert decide([], KeepRules(last=3), tz=UTC) == (set(), set(), {})


@pytest.mark.parametrize("bad", [-1, 1.5, True, None])
def test_it_refuses_a_count_that_is_not_a_whole_number(bad):
    with pytest.raises(ValueError, match="daily"):
        KeepRules(daily=bad)


def test_it_refuses_a_naive_time_and_repeated_ids():
    with pytest.raises(ValueError, match="naive"):
        decide([Item(1, datetime(2025, 1, 1))], KeepRules(last=1), tz=UTC)
    with pytest.raises(ValueError, match="repeat"):
        decide([Item(1, utc(2025, 1, 1)), Item(1, utc(2025, 1, 2))], KeepRules(), tz=UTC)
