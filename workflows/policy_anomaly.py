"""``spec.anomaly`` of a policy: what a backup flagged as anomalous does besides warning
(docs/user/anomalies.md). Read by :mod:`workflows.policy` (the field) and :mod:`workflows.pipelines`
(finalize's ``--lock-last-good``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from workflows.policy_fields import DURATION_RE


class Anomaly(BaseModel):
    """Ransomware and mass-deletion warning: each backup's changes are compared with the app's history
    and an unusual one is flagged in its record (always on); this says what else a flagged backup does."""

    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True, frozen=True)

    lock_last_good: str | None = Field(
        None,
        pattern=DURATION_RE,
        description="When a backup is flagged, keep the newest unflagged backup of the app locked "
        "(S3 Object Lock) this long from then, e.g. 30d; needs a bucket with Object Lock. Default: "
        "lock nothing.",
    )

    def finalize_args(self) -> tuple[str, ...]:
        """What finalize adds to its command line for these settings (nothing by default)."""
        return ("--lock-last-good", self.lock_last_good) if self.lock_last_good else ()
