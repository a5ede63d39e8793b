"""`{{ workload|live_state }}`: a workload's live state, derived from its containers."""

from __future__ import annotations

from django import template

from workloads.models import LiveSummary, Workload, live_summary

register = template.Library()


@register.filter
def live_state(workload: Workload) -> LiveSummary:
    """Reads the containers once per workload and request (prefetch `live_containers` for lists)."""
    cached = getattr(workload, "_live_summary", None)
    if cached is None:
        cached = workload._live_summary = live_summary(workload)
    return cached
