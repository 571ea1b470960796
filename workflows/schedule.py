"""CronWorkflows of a scheduled policy: backup, and optionally prune and check (with the restore test
when ``verify.restoreTest.enabled``), built with Hera.

Each CronWorkflow only references its WorkflowTemplate (``workflowTemplateRef``), so a scheduled run
and one started from the Argo UI or ``argo submit --from workflowtemplate/NAME`` are the same. A run
is never started while the previous one is still going (``concurrencyPolicy: Forbid``; the app mutex
guards against manual runs), and a run missed by more than ``startingDeadlineSeconds`` (controller
down, cluster upgrade) is skipped rather than started late in business hours.
Called by :mod:`workflows.render`.
"""

from __future__ import annotations

from hera.workflows import CronWorkflow
from hera.workflows import models as m

from workflows.hera_builder import DESCRIPTION_ANNOTATION, TITLE_ANNOTATION, Names
from workflows.policy import Policy

HISTORY_LIMIT = 3


def _cron(policy: Policy, pipeline: str, cron: str, title: str, description: str) -> CronWorkflow:
    names = Names(policy)
    schedule = policy.spec.schedule
    assert schedule is not None
    labels = names.labels(pipeline)
    annotations = {TITLE_ANNOTATION: title, DESCRIPTION_ANNOTATION: description}
    return CronWorkflow(
        name=names.template(pipeline),
        namespace=policy.namespace,
        labels=labels,
        annotations=annotations,
        schedules=[cron],
        timezone=schedule.timezone,
        concurrency_policy="Forbid",
        starting_deadline_seconds=schedule.starting_deadline_seconds,
        cron_suspend=schedule.suspend or None,
        successful_jobs_history_limit=HISTORY_LIMIT,
        failed_jobs_history_limit=HISTORY_LIMIT,
        workflow_template_ref=m.WorkflowTemplateRef(name=names.template(pipeline)),
        workflow_metadata=m.WorkflowMetadata(labels=labels, annotations=annotations),
    )


def cron_workflows(policy: Policy) -> list[CronWorkflow]:
    """The CronWorkflows of a policy (none without ``spec.schedule``)."""
    schedule = policy.spec.schedule
    if schedule is None:
        return []
    where = f"{policy.app} ({policy.namespace})"
    out = [
        _cron(
            policy,
            "backup",
            schedule.cron,
            f"Scheduled backup of {where}",
            f"Runs backup-{policy.name} at '{schedule.cron}' ({schedule.timezone}).",
        )
    ]
    if schedule.prune:
        out.append(
            _cron(
                policy,
                "prune",
                schedule.prune,
                f"Scheduled prune of {where}",
                f"Runs prune-{policy.name} at '{schedule.prune}' ({schedule.timezone}).",
            )
        )
    if schedule.check:
        # The restore test follows the template's restore-test parameter, whose default is
        # verify.restoreTest.enabled: a scheduled run and a run started by hand do the same.
        test = policy.spec.verify.restore_test
        with_test = (
            f", with a restore test into a {test.scratch_size} scratch volume"
            if test and test.enabled
            else ""
        )
        out.append(
            _cron(
                policy,
                "check",
                schedule.check,
                f"Scheduled repository check of {where}",
                f"Runs check-{policy.name} at '{schedule.check}' ({schedule.timezone}){with_test}.",
            )
        )
    return out
