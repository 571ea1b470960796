"""``spec.notifications`` of a policy: webhooks told of each backup's outcome (docs/user/notifications.md).

Each entry is checked by the same function finalize uses at run time (``steps.api.notification_problems``,
on the spec it will be given), so lint and render refuse what finalize would. Credentials never live in
the policy: a URL that carries one (a Slack or Teams webhook, a token in a query string) comes from a
Secret key (``urlSecret``), as does the HMAC key (``secretRef``) and an optional CA bundle
(``caBundleSecret``); finalize's pod mounts them as files. Read by :mod:`workflows.policy` (the field)
and :mod:`workflows.pipeline_notifications` (finalize's ``--notify`` options and mounts).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from steps.api import notification_problems
from workflows.policy_fields import DNS_SUBDOMAIN_RE, SECRET_KEY_RE

ObjectName = Annotated[str, Field(pattern=DNS_SUBDOMAIN_RE, max_length=253)]
SecretKey = Annotated[str, Field(pattern=SECRET_KEY_RE, max_length=253)]
NOTIFY_DIR = "/etc/snapflow/notify"  # finalize's pod: NOTIFY_DIR/NAME/{url,hmac,ca}/FILE, read-only
# the run-time spec's fields and the policy's
POLICY_FIELD = {"url_file": "urlSecret", "secret_file": "secretRef", "ca_file": "caBundleSecret"}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True, frozen=True)


class SecretKeyRef(_Model):
    name: ObjectName = Field(description="Name of the Secret.")
    key: SecretKey = Field(description="Key holding the value.")


class Notification(_Model):
    """One webhook: where it is, the message format, and the events it is told of."""

    name: str = Field(description="Name of the target (lowercase letters, digits and '-', at most 32).")
    url: str | None = Field(
        None,
        description="The webhook's URL, when it holds no credentials (no user, password or query string; "
        "not for slack or teams, whose URL is their key). Exactly one of url and urlSecret.",
    )
    url_secret: SecretKeyRef | None = Field(None, description="A Secret key holding the URL.")
    format: Literal["json", "slack", "teams"] = Field(
        "json", description="json (Snapflow's own), slack (incoming webhook) or teams (workflow webhook)."
    )
    on: list[Literal["commit", "failure"]] = Field(
        default_factory=lambda: ["commit", "failure"],
        description="The events sent: commit (the backup was committed), failure (it was not).",
    )
    secret_ref: SecretKeyRef | None = Field(
        None,
        description="A Secret key holding the HMAC key: each message is signed (X-Snapflow-Signature-256).",
    )
    ca_bundle_secret: SecretKeyRef | None = Field(
        None, description="A Secret key holding a CA bundle for the https URL (default: the system's)."
    )

    def files(self) -> dict[str, tuple[SecretKeyRef, str]]:
        """run-time spec field -> (the Secret key, the file finalize reads it from)."""
        out = {}
        for spec_field, ref, sub, file in (
            ("url_file", self.url_secret, "url", "url"),
            ("secret_file", self.secret_ref, "hmac", "key"),
            ("ca_file", self.ca_bundle_secret, "ca", "ca.crt"),
        ):
            if ref is not None:
                out[spec_field] = (ref, f"{NOTIFY_DIR}/{self.name}/{sub}/{file}")
        return out

    def spec(self) -> dict:
        """What finalize's ``--notify`` gets (Secrets as the files they are mounted at)."""
        out: dict = {"name": self.name, "format": self.format, "on": list(self.on)}
        if self.url is not None:
            out["url"] = self.url
        out.update({k: path for k, (_, path) in self.files().items()})
        return out

    @model_validator(mode="before")
    @classmethod
    def _on_is_a_key(cls, data):
        # YAML 1.1 (PyYAML) reads the bare key `on` as true
        if isinstance(data, dict) and True in data and "on" not in data:
            data = {("on" if k is True else k): v for k, v in data.items()}
        return data

    @model_validator(mode="after")
    def _as_finalize_checks_it(self) -> Notification:
        for spec_field, why in notification_problems(self.spec()):
            raise ValueError(f"@{POLICY_FIELD.get(spec_field, to_camel(spec_field))}|{why}")
        return self


def _distinct_names(items: list[Notification]) -> list[Notification]:
    names = [n.name for n in items]
    for name in names:
        if names.count(name) > 1:
            raise ValueError(f"expected distinct names, {name!r} is given twice")
    return items


Notifications = Annotated[list[Notification], AfterValidator(_distinct_names)]
