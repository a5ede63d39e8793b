"""Berth's domain: projects, stages, workloads and what they own.

One module per part (projects, workloads with their volumes, env and ports,
the deploy ledger, containers and samples, events), re-exported here so that
`from workloads.models import Workload` keeps working.
"""

from workloads.models.containers import (
    Container,
    ContainerQuerySet,
    ContainerStatsSample,
    EngineState,
    Health,
    LiveState,
    LiveSummary,
    StatsRollup,
    live_summary,
    with_live_containers,
)
from workloads.models.deploys import DeployInProgress, DeployLog, DeployRecord
from workloads.models.events import EventLog
from workloads.models.images import PulledImage
from workloads.models.projects import SLUG_VALIDATOR, Project, Stage
from workloads.models.secret_versions import SecretVersion
from workloads.models.workloads import (
    ENV_NAME_VALIDATOR,
    EnvVar,
    HookFailure,
    PortMapping,
    RegistryCredential,
    SnapshotConsistency,
    VolumeMount,
    Workload,
    WorkloadQuerySet,
    remove_git_cache_after_delete,
)

__all__ = [
    "ENV_NAME_VALIDATOR", "SLUG_VALIDATOR", "Container", "ContainerQuerySet",
    "ContainerStatsSample", "DeployInProgress", "EngineState", "Health", "LiveState",
    "LiveSummary", "live_summary", "with_live_containers", "DeployLog", "DeployRecord", "EnvVar",
    "EventLog", "HookFailure", "PortMapping", "Project", "PulledImage", "RegistryCredential",
    "SecretVersion", "SnapshotConsistency", "Stage", "StatsRollup", "VolumeMount", "Workload",
    "WorkloadQuerySet",
    "remove_git_cache_after_delete",
]
