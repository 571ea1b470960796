"""The sources a policy protects besides an app: a cluster's etcd, an OCI registry, an S3 bucket.

``spec.source`` holds exactly one of ``etcd``, ``registry`` or ``bucket``; it replaces the app fields
(``app``, ``selector``, ``volumes``, ``quiesce``), which keep meaning an app. Credentials are never in
the policy: each source names Secrets that the step pods mount as files::

    spec:
      source:
        etcd:
          tls: {hostPath: /etc/kubernetes/pki/etcd}
      repository: {...}

The steps that back them up and restore them are ``etcd-snapshot``/``etcd-restore``,
``registry-backup``/``registry-restore`` and ``bucket-backup``/``bucket-restore``
(docs/user/etcd.md, registry.md, buckets.md); :mod:`workflows.pipeline_sources` builds their
pipelines. Used by :mod:`workflows.policy`.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from steps.api import UsageError, parse_images_of, runtime
from workflows.policy_fields import DNS_LABEL_RE, DNS_SUBDOMAIN_RE, ENDPOINT_RE, SECRET_KEY_RE

ObjectName = Annotated[str, Field(pattern=DNS_SUBDOMAIN_RE, max_length=253)]
SecretKey = Annotated[str, Field(pattern=SECRET_KEY_RE, max_length=253)]
HTTPS_URL_RE = r"^https://[A-Za-z0-9.\-\[\]:]+(:[0-9]{1,5})?/?$"
ABSOLUTE_PATH_RE = r"^/[^\n\x00]*$"
# A registry repository pattern or image reference: no whitespace, no template tags.
REFERENCE_RE = r"^[^\s{}]+$"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True, frozen=True)


class EtcdTLS(_Model):
    """Where the etcd client certificate comes from: exactly one of hostPath and secretName."""

    host_path: str | None = Field(
        None,
        pattern=ABSOLUTE_PATH_RE,
        description="Directory on the control-plane node with kubeadm's ca.crt, healthcheck-client.crt and "
        "healthcheck-client.key (e.g. /etc/kubernetes/pki/etcd), mounted read-only. Needs Pod Security "
        "privileged where the pod runs.",
    )
    secret_name: ObjectName | None = Field(
        None, description="Secret with ca.crt, tls.crt and tls.key (a client certificate etcd accepts)."
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> EtcdTLS:
        if (self.host_path is None) == (self.secret_name is None):
            raise ValueError("expected exactly one of hostPath and secretName")
        return self


# API server host names of managed control planes, whose etcd the provider runs and nobody else
# reaches: an etcd policy naming one is refused, pointing to app-centric protection.
MANAGED_CONTROL_PLANES = (
    (".eks.amazonaws.com", "Amazon EKS"),
    (".azmk8s.io", "Azure AKS"),
    (".gke.goog", "Google GKE"),
    ("container.googleapis.com", "Google GKE"),
    (".openshiftapps.com", "Red Hat OpenShift Dedicated/ROSA"),
    (".k8s.ondigitalocean.com", "DigitalOcean Kubernetes"),
    (".oraclecloud.com", "Oracle OKE"),
)
MANAGED_HINT = (
    "its etcd is run by the provider and cannot be reached; protect every namespace with app policies"
    " instead (docs/user/etcd.md)"
)


def managed_control_plane(host: str) -> str | None:
    """The managed Kubernetes service ``host`` belongs to, or None."""
    host = host.lower().rstrip(".")
    for suffix, name in MANAGED_CONTROL_PLANES:
        if host.endswith(suffix) or host == suffix.lstrip("."):
            return name
    return None


class EtcdSource(_Model):
    """A cluster's etcd (self-managed control planes such as kubeadm's), snapshotted through its
    maintenance API with client TLS."""

    endpoints: list[Annotated[str, Field(pattern=HTTPS_URL_RE)]] = Field(
        default_factory=list,
        description="etcd client URLs (https://HOST:2379); default: the member on the node the pod runs "
        "on (https://NODE_IP:2379, the pod is pinned to control-plane nodes).",
    )
    tls: EtcdTLS = Field(description="The client certificate.")
    server_name: str | None = Field(
        None, pattern=r"^[A-Za-z0-9.\-]+$", max_length=253, description="Name in etcd's server certificate."
    )
    scratch_size: str = Field(
        "8Gi",
        pattern=r"^[0-9]+(Mi|Gi|Ti)$",
        description="Size limit of the emptyDir the snapshot streams into (at least etcd's database size).",
    )

    @field_validator("endpoints")
    @classmethod
    def _not_a_managed_control_plane(cls, endpoints: list[str]) -> list[str]:
        import urllib.parse

        for url in endpoints:
            service = managed_control_plane(urllib.parse.urlsplit(url).hostname or "")
            if service:
                raise ValueError(f"{url} is a managed control plane ({service}): {MANAGED_HINT}")
        return endpoints


class SecretRef(_Model):
    """A Secret mounted as files into the step pod (never read into the environment)."""

    name: ObjectName = Field(description="Name of the Secret.")


class RegistryCredentials(_Model):
    name: ObjectName = Field(description="Secret with the registry user name and password (or token).")
    username_key: SecretKey = Field("username", description="Key holding the user name.")
    password_key: SecretKey = Field("password", description="Key holding the password or token.")


class CASecret(_Model):
    name: ObjectName = Field(description="Secret holding the CA bundle.")
    key: SecretKey = Field("ca.crt", description="Key holding the PEM bundle.")


class Rehome(_Model):
    from_: str = Field(
        alias="from", pattern=REFERENCE_RE, description="HOST/PATH prefix, e.g. harbor.a/proj."
    )
    to: str = Field(pattern=REFERENCE_RE, description="Its new HOST/PATH prefix, e.g. harbor.b/proj.")


class ImagesOf(_Model):
    """The pods whose images a registry policy backs up: those of ``namespace`` matching ``selector``."""

    namespace: Annotated[str, Field(pattern=DNS_LABEL_RE, max_length=63)] = Field(
        description="Namespace of the app's pods."
    )
    selector: str | None = Field(
        None,
        pattern=r"^[^\n]+$",
        description="Label selector of its pods, as kubectl -l takes it (e.g. app.kubernetes.io/part-of=shop); "
        "default: every pod of the namespace.",
    )

    @model_validator(mode="after")
    def _parses(self) -> ImagesOf:
        # the step's own parser: what lint accepts, registry-backup --images-of accepts
        try:
            parse_images_of(self.arg, "selector")
        except UsageError as err:
            raise ValueError(f"@selector|{str(err).partition(': ')[2]}") from None
        return self

    @property
    def arg(self) -> str:
        """The value of ``registry-backup --images-of``."""
        return f"{self.namespace}:{self.selector}" if self.selector else self.namespace


class RegistrySource(_Model):
    """Images of an OCI Distribution registry (Harbor or any other)."""

    url: str = Field(pattern=HTTPS_URL_RE, description="The registry, https://HOST[:PORT].")
    ca_secret: CASecret | None = Field(None, description="CA bundle of the registry's certificate.")
    credentials_secret: RegistryCredentials | None = Field(
        None, description="User name and password, mounted as files; omit for anonymous access."
    )
    repositories: list[Annotated[str, Field(pattern=REFERENCE_RE)]] = Field(
        default_factory=list, description="Repository name patterns (every tag of each), e.g. shop/*."
    )
    images: list[Annotated[str, Field(pattern=REFERENCE_RE)]] = Field(
        default_factory=list, description="Exact images, HOST/NAME@sha256:... or HOST/NAME:TAG."
    )
    images_of: list[ImagesOf] = Field(
        default_factory=list,
        description="Exactly the images these pods run (their imageID digests, under the tags their specs "
        "name); the backup reads the pods through the Kubernetes API (docs/user/registry.md).",
    )
    chunk_size_mi_b: int = Field(
        64, ge=1, le=4096, alias="chunkSizeMiB", description="Restore uploads larger blobs in chunks of this."
    )
    rehome: list[Rehome] = Field(default_factory=list, description="Restore pushes FROM prefixes as TO.")

    @model_validator(mode="after")
    def _one_selection(self) -> RegistrySource:
        if [bool(self.repositories), bool(self.images), bool(self.images_of)].count(True) != 1:
            raise ValueError("expected exactly one of repositories, images and imagesOf")
        moved: dict[str, str] = {}
        for rule in self.rehome:  # the step refuses it too (steps.manifests.image_rehome)
            old = rule.from_.rstrip("/")
            if moved.setdefault(old, rule.to.rstrip("/")) != rule.to.rstrip("/"):
                raise ValueError(f"@rehome|{old} is moved twice, to {moved[old]} and to {rule.to}")
        hosts = {rule.to.split("/")[0] for rule in self.rehome}
        if len(hosts) > 1:
            raise ValueError(
                f"@rehome|expected every rule to move to one registry (a restore pushes to one), got {', '.join(sorted(hosts))}"
            )
        return self


class BucketCredentials(_Model):
    name: ObjectName = Field(description="Secret with the bucket's access key pair.")
    access_key_id_key: SecretKey = Field(
        runtime.AWS_ACCESS_KEY_ID, description="Key holding the access key ID."
    )
    secret_access_key_key: SecretKey = Field(
        runtime.AWS_SECRET_ACCESS_KEY, description="Key holding the secret access key."
    )


class BucketSource(_Model):
    """An S3 bucket (or a prefix of it) at any S3-compatible endpoint other than the repository's."""

    endpoint: str = Field(pattern=ENDPOINT_RE, description="S3 endpoint of the bucket.")
    bucket: str = Field(pattern=r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$", description="Bucket name.")
    prefix: str | None = Field(None, pattern=r"^[^\n\x00{}]+$", description="Only keys starting with this.")
    region: str | None = Field(None, max_length=64, description="The bucket's region.")
    versions: bool = Field(False, description="Keep every object version (the bucket must be versioned).")
    credentials_secret: BucketCredentials | None = Field(
        None, description="The bucket's access keys, mounted as files; omit for anonymous access."
    )
    ca_bundle_secret: CASecret | None = Field(None, description="CA bundle of the endpoint's certificate.")
    readers: int = Field(8, ge=1, le=64, description="Objects read at once.")

    @field_validator("prefix")
    @classmethod
    def _relative(cls, value: str | None) -> str | None:
        if value is not None and value.startswith("/"):
            raise ValueError(f"expected a key prefix without a leading '/', got {value!r}")
        return value

    @property
    def source_url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"


class Source(_Model):
    """What the policy protects instead of an app: exactly one of etcd, registry and bucket."""

    etcd: EtcdSource | None = Field(None, description="A cluster's etcd (docs/user/etcd.md).")
    registry: RegistrySource | None = Field(None, description="An OCI registry (docs/user/registry.md).")
    bucket: BucketSource | None = Field(None, description="An S3 bucket or prefix (docs/user/buckets.md).")

    @model_validator(mode="after")
    def _exactly_one(self) -> Source:
        set_ = [k for k in ("etcd", "registry", "bucket") if getattr(self, k) is not None]
        if len(set_) != 1:
            got = f", got {' and '.join(set_)}" if set_ else ""
            raise ValueError(f"expected exactly one of etcd, registry and bucket{got}")
        return self

    @property
    def kind(self) -> str:
        return "etcd" if self.etcd else "registry" if self.registry else "bucket"


# The app fields a source excludes (aliases as written in a policy).
APP_FIELDS = ("app", "selector", "volumes", "quiesce")
