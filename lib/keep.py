"""Retention by age: which snapshots (or copies) a keep policy keeps, as restic's `forget` does.

Pure: items are `(id, aware datetime)` pairs, no models. The caller applies the
decision (local snapshots per workload, and separately each target's copies);
docs/retention.md states the rules in plain words, with worked examples.

The rules, over the items sorted newest first (ties: the larger id first):

- `last=N` keeps the newest N items.
- `hourly`, `daily`, `weekly`, `monthly`, `yearly=N`: walking newest to
  oldest, an item is kept when its bucket (its hour, day, ISO week, month or
  year in the operator's time zone) differs from that of the item this kind
  kept before, until N buckets are kept: the newest item of each of the N
  newest buckets that have one. If fewer than N buckets have items, the
  oldest item is kept too ("oldest-<kind>"), as restic does since 0.17: a
  count not used up keeps the longest history.
- An item is kept if any rule keeps it; its reasons name every rule that did.
- A policy with every count 0 keeps everything (restic refuses to forget with
  an empty policy; forgetting everything is never what a blank form means).

An hour is a real hour: when clocks go back, the repeated wall-clock hour is
two hourly buckets (told apart by `fold`), not one.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Iterator
from dataclasses import astuple, dataclass, fields
from datetime import datetime, tzinfo
from typing import NamedTuple

KINDS = ("last", "hourly", "daily", "weekly", "monthly", "yearly")
EMPTY_POLICY = "empty-policy"
PROTECTED = "protected"


def oldest(kind: str) -> str:
    """The reason of the oldest item, kept because `kind`'s count was not used up."""
    return f"oldest-{kind}"


REASONS = frozenset([*KINDS, *(oldest(kind) for kind in KINDS[1:]), EMPTY_POLICY, PROTECTED])


class Item(NamedTuple):
    id: Hashable
    when: datetime


@dataclass(frozen=True)
class KeepRules:
    """How many of each kind to keep; 0 turns a kind off."""

    last: int = 0
    hourly: int = 0
    daily: int = 0
    weekly: int = 0
    monthly: int = 0
    yearly: int = 0

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"keep {field.name} must be a whole number, 0 or more: {value!r}")

    @property
    def empty(self) -> bool:
        return not any(astuple(self))

    def counts(self) -> dict[str, int]:
        return {kind: getattr(self, kind) for kind in KINDS}


class Decision(NamedTuple):
    """`keep` and `forget` split the items' ids; `reasons` has every kept id, and only those."""

    keep: set[Hashable]
    forget: set[Hashable]
    reasons: dict[Hashable, tuple[str, ...]]


Bucket = Callable[[int, datetime], Hashable]

# Each takes the item's position (newest first) and its local time.
BUCKETS: dict[str, Bucket] = {
    "last": lambda position, local: position,
    "hourly": lambda position, local: (local.date(), local.hour, local.fold),
    "daily": lambda position, local: local.date(),
    "weekly": lambda position, local: local.isocalendar()[:2],
    "monthly": lambda position, local: (local.year, local.month),
    "yearly": lambda position, local: local.year,
}


def newest_first(items: Iterable[tuple[Hashable, datetime]]) -> list[Item]:
    """The items sorted newest first; refuses naive times and repeated ids.

    Ids must be orderable among themselves: equal times are ordered by id.
    """
    ordered = [Item(*item) for item in items]
    for item in ordered:
        if item.when.tzinfo is None or item.when.utcoffset() is None:
            raise ValueError(f"item {item.id!r} has a naive time: {item.when!r}")
    if len({item.id for item in ordered}) != len(ordered):
        raise ValueError("item ids repeat")
    # The id breaks ties so that the decision never depends on the order given.
    return sorted(ordered, key=lambda item: (item.when, item.id), reverse=True)


def decide(items: Iterable[tuple[Hashable, datetime]], rules: KeepRules, *,
           tz: tzinfo) -> Decision:
    """Which items `rules` keep and which it forgets, with the reasons for each kept one.

    `tz` is the operator's zone (a `zoneinfo.ZoneInfo`): buckets are its hours,
    days, weeks, months and years.
    """
    ordered = newest_first(items)
    ids = [item.id for item in ordered]
    if rules.empty:
        return Decision(set(ids), set(), {pk: (EMPTY_POLICY,) for pk in ids})
    local = [item.when.astimezone(tz) for item in ordered]
    found: dict[Hashable, list[str]] = {pk: [] for pk in ids}
    for kind, count in rules.counts().items():
        for pk, reason in _walk(ids, local, kind, count):
            found[pk].append(reason)
    reasons = {pk: tuple(why) for pk, why in found.items() if why}
    return Decision(set(reasons), set(ids) - set(reasons), reasons)


def _walk(ids: list[Hashable], local: list[datetime], kind: str,
          count: int) -> Iterator[tuple[Hashable, str]]:
    """The ids one kind keeps, newest first, with their reason."""
    bucket, previous, left = BUCKETS[kind], object(), count
    for position, (pk, when) in enumerate(zip(ids, local, strict=True)):
        if not left:
            return
        key = bucket(position, when)
        if key != previous:
            previous, left = key, left - 1
            yield pk, kind
        elif position == len(ids) - 1:
            yield pk, oldest(kind)


def protect(decision: Decision, protected: Iterable[Hashable]) -> Decision:
    """The decision with the `protected` ids kept whatever the rules said.

    The caller names them (young pre-restore snapshots, the newest successful
    deploy's pre-deploy snapshot, a target's last verified copy); each gets the
    reason "protected", kept already or not. Ids the decision does not know
    are ignored.
    """
    shielded = set(protected) & (decision.keep | decision.forget)
    reasons = dict(decision.reasons)
    for pk in shielded:
        reasons[pk] = (*reasons.get(pk, ()), PROTECTED)
    return Decision(decision.keep | shielded, decision.forget - shielded, reasons)


def preview(items: Iterable[tuple[Hashable, datetime]], rules: KeepRules,
            protected: Iterable[Hashable], tz: tzinfo) -> list[Item]:
    """What applying `rules` would delete, newest first, protected items spared:
    for a page to show before a policy change is saved."""
    ordered = newest_first(items)
    forget = protect(decide(ordered, rules, tz=tz), protected).forget
    return [item for item in ordered if item.id in forget]
