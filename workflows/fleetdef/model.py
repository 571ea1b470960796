"""The fleet file: which clusters there are, how to reach them, and which policies run where.

::

    apiVersion: snapflow.io/v1alpha1
    kind: Fleet
    metadata: {name: shop}
    spec:
      clusters:
        - name: prod-eu
          labels: {env: prod, region: eu}
          kubeContext: prod-eu
          argoServer:
            url: https://argo.prod-eu.example:2746
            tokenSecret: {namespace: argo, name: snapflow-deployer, key: token}
      policies:                               # placements
        - files: [policies/*.yaml]            # relative to the fleet file
          clusterSelector: {matchLabels: {env: prod}}
          namespaces: [shop, "team-*"]        # of the policies in those files; default: all
      overrides:
        - cluster: prod-us
          policies: [shop/orders-db]          # default: every policy placed on the cluster
          repository: {url: s3://backups-us/shop}   # a JSON merge patch of spec.repository
          schedule: {timezone: America/New_York}   # a merge patch of spec.schedule (null: none)
          storageClassName: gp3               # verify.restoreTest.storageClassName
          snapshotClassName: ebs-snapclass    # snapshot.className

:func:`load_fleet` validates the file like a policy (one line per problem, ``FILE: field.path: what
was expected``). A problem of the file as a whole (its shape, two clusters of one name, an override
naming no cluster) raises :class:`~workflows.policy_fields.PolicyError`; a bad cluster entry is kept
aside with its problems, so the other clusters still render. :func:`policies_for` gives the policies
of one cluster, overrides applied and ``spec.cluster`` set to the cluster's name, each validated by
:func:`workflows.policy.parse_policy` (the one validation path of a policy). A token is never written in
the fleet file: it comes from a Secret (read through the cluster's kube context) or a file.
"""

from __future__ import annotations

import copy
import fnmatch
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from workflows.policy import (
    LoadedPolicy,
    Repository,
    Schedule,
    parse_policy,
    policy_documents,
    yaml_documents,
)
from workflows.policy_fields import (
    DNS_LABEL_RE,
    DNS_SUBDOMAIN_RE,
    ENDPOINT_RE,
    SECRET_KEY_RE,
    PolicyError,
    describe_errors,
    yaml_type,
)

API_VERSION = "snapflow.io/v1alpha1"
KIND = "Fleet"
INLINE_TOKEN_KEYS = ("token", "bearerToken")

DnsLabel = Annotated[str, Field(pattern=DNS_LABEL_RE, max_length=63)]
ObjectName = Annotated[str, Field(pattern=DNS_SUBDOMAIN_RE, max_length=253)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True, frozen=True)


class LabelRequirement(_Model):
    """One requirement of a label selector, as in Kubernetes."""

    key: str = Field(min_length=1, description="Label key.")
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"] = Field(description="How the key is tested.")
    values: list[str] = Field(default_factory=list, description="Values for In and NotIn.")

    @model_validator(mode="after")
    def _values_fit_operator(self) -> LabelRequirement:
        if self.operator in ("In", "NotIn") and not self.values:
            raise ValueError(f"@values|expected at least one value for operator {self.operator}")
        if self.operator in ("Exists", "DoesNotExist") and self.values:
            raise ValueError(f"@values|expected no values for operator {self.operator}")
        return self

    def matches(self, labels: dict[str, str]) -> bool:
        if self.operator == "Exists":
            return self.key in labels
        if self.operator == "DoesNotExist":
            return self.key not in labels
        if self.operator == "In":
            return labels.get(self.key) in self.values
        return labels.get(self.key) not in self.values


class LabelSelector(_Model):
    """Clusters by their labels (every requirement must hold; an empty selector matches every cluster)."""

    match_labels: dict[str, str] = Field(default_factory=dict, description="Labels a cluster must have.")
    match_expressions: list[LabelRequirement] = Field(
        default_factory=list, description="Further requirements (In, NotIn, Exists, DoesNotExist)."
    )

    def matches(self, labels: dict[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in self.match_labels.items()) and all(
            r.matches(labels) for r in self.match_expressions
        )


class SecretRef(_Model):
    """A key of a Secret on the cluster itself, read through its kube context."""

    namespace: DnsLabel = Field(description="Namespace of the Secret.")
    name: ObjectName = Field(description="Name of the Secret.")
    key: str = Field("token", pattern=SECRET_KEY_RE, description="Key holding the bearer token.")


class ArgoServer(_Model):
    """The cluster's Argo Server. The token comes from a Secret or a file, never from this file."""

    url: str = Field(pattern=ENDPOINT_RE, description="Argo Server URL, e.g. https://argo.example:2746.")
    token_secret: SecretRef | None = Field(None, description="Secret holding the bearer token.")
    token_file: str | None = Field(
        None, min_length=1, description="File holding the bearer token (relative to the fleet file)."
    )
    ca_file: str | None = Field(None, min_length=1, description="CA bundle to verify the server.")
    insecure_skip_tls_verify: bool = Field(False, description="Do not verify the server certificate.")

    @model_validator(mode="before")
    @classmethod
    def _no_inline_token(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key in INLINE_TOKEN_KEYS:
                if key in data:
                    raise ValueError(
                        f"@{key}|expected no token in the fleet file: name a Secret (tokenSecret) or a "
                        "file (tokenFile)"
                    )
        return data

    @model_validator(mode="after")
    def _one_token_source(self) -> ArgoServer:
        if self.token_secret and self.token_file:
            raise ValueError("@tokenFile|expected either tokenSecret or tokenFile, not both")
        if self.ca_file and self.insecure_skip_tls_verify:
            raise ValueError("@caFile|expected either caFile or insecureSkipTlsVerify, not both")
        return self


class Cluster(_Model):
    """One cluster of the fleet."""

    name: DnsLabel = Field(description="Cluster name: the output directory and every backup's record.")
    labels: dict[str, str] = Field(default_factory=dict, description="Labels that placements select on.")
    kube_context: str | None = Field(
        None, min_length=1, description="Context of the kubeconfig that reaches the cluster."
    )
    kubeconfig: str | None = Field(
        None, min_length=1, description="kubeconfig file (relative to the fleet file); default: $KUBECONFIG."
    )
    argo_server: ArgoServer | None = Field(None, description="The cluster's Argo Server.")

    @model_validator(mode="after")
    def _reachable(self) -> Cluster:
        if not self.kube_context and not self.argo_server:
            raise ValueError(
                "@kubeContext|expected a kubeContext or an argoServer (how to reach the cluster)"
            )
        return self


class Placement(_Model):
    """Which policies run on which clusters."""

    files: list[str] = Field(
        min_length=1, description="Policy files or glob patterns, relative to the fleet file."
    )
    cluster_selector: LabelSelector | None = Field(
        None, description="Clusters the policies run on; omit for every cluster."
    )
    namespaces: list[str] = Field(
        default_factory=list,
        description="Only the policies of these namespaces (names or patterns like team-*); default: all.",
    )


def _patch_keys(value: dict[str, Any] | None, model: type[BaseModel]) -> dict[str, Any] | None:
    if value is None:
        return None
    allowed = sorted((f.alias or n) for n, f in model.model_fields.items())
    for key in value:
        if key not in allowed:
            raise ValueError(f"@{key}|unknown field (expected one of: {', '.join(allowed)})")
    return value


def _policy_key(key: str) -> str:
    namespace, sep, name = key.partition("/")
    if not sep or not re.match(DNS_LABEL_RE, namespace) or not re.match(DNS_LABEL_RE, name):
        raise ValueError(f"expected NAMESPACE/NAME of a policy, got {key!r}")
    return key


PolicyKey = Annotated[str, AfterValidator(_policy_key)]


class Override(_Model):
    """Settings that differ on one cluster. Applied in file order, then validated with the policy."""

    cluster: DnsLabel = Field(description="Name of the cluster.")
    policies: list[PolicyKey] = Field(
        default_factory=list, description="NAMESPACE/NAME of the policies; default: all on the cluster."
    )
    repository: dict[str, Any] | None = Field(
        None, description="Merged into spec.repository (a JSON merge patch: null removes a field)."
    )
    schedule: dict[str, Any] | None = Field(
        None, description="Merged into spec.schedule; null: on-demand backups only."
    )
    storage_class_name: ObjectName | None = Field(
        None, description="StorageClass of the restore test's scratch volume."
    )
    snapshot_class_name: ObjectName | None = Field(
        None, description="VolumeSnapshotClass (snapshot.className)."
    )

    @field_validator("repository")
    @classmethod
    def _repository_keys(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return _patch_keys(value, Repository)

    @field_validator("schedule")
    @classmethod
    def _schedule_keys(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return _patch_keys(value, Schedule)


class FleetSpec(_Model):
    clusters: list[Any] = Field(min_length=1, description="The clusters (each validated on its own).")
    policies: list[Placement] = Field(default_factory=list, description="Which policies run where.")
    overrides: list[Override] = Field(default_factory=list, description="Per-cluster settings.")


class FleetMetadata(_Model):
    name: DnsLabel = Field(description="Fleet name.")


class FleetDocument(_Model):
    model_config = ConfigDict(title="Fleet")

    api_version: Literal["snapflow.io/v1alpha1"] = Field(alias="apiVersion", description="Format version.")
    kind: Literal["Fleet"] = Field(description="Always Fleet.")
    metadata: FleetMetadata
    spec: FleetSpec


@dataclass(frozen=True)
class BadCluster:
    """A cluster entry that failed validation: reported, the others go on."""

    index: int
    name: str | None  # when the entry had a usable name
    problems: list[str]

    @property
    def label(self) -> str:
        return self.name or f"spec.clusters[{self.index}]"


@dataclass
class Fleet:
    path: Path
    name: str
    clusters: list[Cluster]
    bad_clusters: list[BadCluster]
    placements: list[Placement]
    overrides: list[Override]
    warnings: list[str] = field(default_factory=list)
    # policy documents per placement file entry: (source, document) or a problem line
    documents: dict[str, list[tuple[str, Any]]] = field(default_factory=dict)
    read_problems: dict[str, list[str]] = field(default_factory=dict)

    @property
    def base(self) -> Path:
        return self.path.parent

    def resolve(self, relative: str) -> Path:
        """A path named in the fleet file, relative to the file's folder."""
        p = Path(relative)
        return p if p.is_absolute() else self.base / p


@dataclass
class ClusterPolicies:
    """The validated policies of one cluster, or the problems that keep it from rendering."""

    cluster: Cluster
    loaded: list[LoadedPolicy] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _errors(err: ValidationError, root: type[BaseModel], prefix: str) -> list[str]:
    lines = []
    for path, message in describe_errors(list(err.errors()), root):
        where = f"{prefix}.{path}" if prefix and path else (prefix or path)
        lines.append(f"{where}: {message}" if where else message)
    return lines


def _read(path: Path) -> Any:
    docs = yaml_documents(path, "a fleet file")
    if len(docs) != 1:
        raise PolicyError([f"{path}: expected one Fleet document, found {len(docs)}"])
    if not isinstance(docs[0], dict):
        raise PolicyError([f"{path}: expected a mapping (a Fleet), got {yaml_type(docs[0])}"])
    return docs[0]


def load_fleet(path: str | Path) -> Fleet:
    """Read and validate a fleet file; raises PolicyError for problems of the file as a whole."""
    path = Path(path)
    data = _read(path)
    try:
        doc = FleetDocument.model_validate(data)
    except ValidationError as err:
        raise PolicyError([f"{path}: {line}" for line in _errors(err, FleetDocument, "")]) from None

    clusters: list[Cluster] = []
    bad: list[BadCluster] = []
    for i, entry in enumerate(doc.spec.clusters):
        name = entry.get("name") if isinstance(entry, dict) and isinstance(entry.get("name"), str) else None
        if not isinstance(entry, dict):
            bad.append(
                BadCluster(
                    i, None, [f"{path}: spec.clusters[{i}]: expected a mapping, got {yaml_type(entry)}"]
                )
            )
            continue
        try:
            clusters.append(Cluster.model_validate(entry))
        except ValidationError as err:
            lines = [f"{path}: {line}" for line in _errors(err, Cluster, f"spec.clusters[{i}]")]
            bad.append(BadCluster(i, name, lines))

    problems: list[str] = []
    seen: dict[str, int] = {}
    for i, entry in enumerate(doc.spec.clusters):
        name = entry.get("name") if isinstance(entry, dict) else None
        if isinstance(name, str):
            if name in seen:
                problems.append(
                    f"{path}: spec.clusters[{i}].name: expected a unique cluster name, {name!r} is also "
                    f"spec.clusters[{seen[name]}]"
                )
            seen.setdefault(name, i)
    for i, override in enumerate(doc.spec.overrides):
        if override.cluster not in seen:
            known = ", ".join(sorted(seen)) or "none"
            problems.append(
                f"{path}: spec.overrides[{i}].cluster: expected the name of a cluster of this fleet "
                f"({known}), got {override.cluster!r}"
            )
    if problems:
        raise PolicyError(problems)

    fleet = Fleet(
        path=path,
        name=doc.metadata.name,
        clusters=clusters,
        bad_clusters=bad,
        placements=list(doc.spec.policies),
        overrides=list(doc.spec.overrides),
    )
    _read_policy_files(fleet)
    _placement_warnings(fleet)
    return fleet


def _read_policy_files(fleet: Fleet) -> None:
    """Every document of every file the placements name (not yet validated: overrides come first)."""
    for placement in fleet.placements:
        for entry in placement.files:
            if entry in fleet.documents or entry in fleet.read_problems:
                continue
            target = fleet.resolve(entry)
            if any(c in entry for c in "*?["):
                files = sorted(p for p in target.parent.glob(target.name) if p.is_file())
                if not files:
                    fleet.read_problems[entry] = [f"{fleet.path}: spec.policies: {entry}: matches no file"]
                    continue
            else:
                files = [target]
            docs: list[tuple[str, Any]] = []
            problems: list[str] = []
            for file in files:
                try:
                    found = policy_documents(file)
                except PolicyError as err:
                    problems.extend(err.problems)
                    continue
                for n, doc in enumerate(found, start=1):
                    docs.append((f"{file}#{n}" if len(found) > 1 else str(file), doc))
            fleet.documents[entry] = docs
            if problems:
                fleet.read_problems[entry] = problems


def _namespace_of(doc: Any) -> str | None:
    meta = doc.get("metadata") if isinstance(doc, dict) else None
    ns = meta.get("namespace") if isinstance(meta, dict) else None
    return ns if isinstance(ns, str) else None


def _name_of(doc: Any) -> str | None:
    meta = doc.get("metadata") if isinstance(doc, dict) else None
    name = meta.get("name") if isinstance(meta, dict) else None
    return name if isinstance(name, str) else None


def _in_namespaces(doc: Any, patterns: list[str]) -> bool:
    if not patterns:
        return True
    ns = _namespace_of(doc)
    return ns is None or any(fnmatch.fnmatchcase(ns, p) for p in patterns)


def _placement_warnings(fleet: Fleet) -> None:
    for i, placement in enumerate(fleet.placements):
        where = f"{fleet.path}: spec.policies[{i}]"
        selector = placement.cluster_selector
        if selector is not None and not any(selector.matches(c.labels) for c in fleet.clusters):
            fleet.warnings.append(f"{where}.clusterSelector: warning: matches no cluster of the fleet")
        docs = [d for entry in placement.files for _, d in fleet.documents.get(entry, [])]
        for pattern in placement.namespaces:
            if docs and not any((ns := _namespace_of(d)) and fnmatch.fnmatchcase(ns, pattern) for d in docs):
                fleet.warnings.append(
                    f"{where}.namespaces: warning: {pattern!r} matches no policy of {', '.join(placement.files)}"
                )


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: mappings merge key by key, null removes a key, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def _apply_override(doc: dict, override: Override) -> list[str]:
    """Apply ``override`` to a policy document in place; returns notes about settings left unused."""
    notes = []
    spec = doc.setdefault("spec", {})
    if not isinstance(spec, dict):
        return notes  # parse_policy names it
    if override.repository is not None:
        spec["repository"] = merge_patch(spec.get("repository"), override.repository)
    if "schedule" in override.model_fields_set:
        if override.schedule is None:
            spec.pop("schedule", None)
        else:
            spec["schedule"] = merge_patch(spec.get("schedule"), override.schedule)
    if override.snapshot_class_name:
        spec["snapshot"] = merge_patch(spec.get("snapshot"), {"className": override.snapshot_class_name})
    if override.storage_class_name:
        verify = spec.get("verify")
        test = verify.get("restoreTest") if isinstance(verify, dict) else None
        if isinstance(test, dict):
            test["storageClassName"] = override.storage_class_name
        else:
            notes.append("storageClassName: warning: the policy has no restore test, nothing to set")
    return notes


def policies_for(fleet: Fleet, cluster: Cluster) -> ClusterPolicies:
    """The policies placed on ``cluster``, overrides applied, each validated as a policy."""
    out = ClusterPolicies(cluster)
    prefix = f"{fleet.path}: cluster {cluster.name}"
    placed: dict[str, tuple[str, Any]] = {}  # source -> (source, document), in placement order
    for placement in fleet.placements:
        if placement.cluster_selector is not None and not placement.cluster_selector.matches(cluster.labels):
            continue
        for entry in placement.files:
            out.problems += [f"{prefix}: {line}" for line in fleet.read_problems.get(entry, [])]
            for source, doc in fleet.documents.get(entry, []):
                if _in_namespaces(doc, placement.namespaces):
                    placed.setdefault(source, (source, doc))

    overrides = [(i, o) for i, o in enumerate(fleet.overrides) if o.cluster == cluster.name]
    keys = {f"{_namespace_of(d)}/{_name_of(d)}" for _, d in placed.values()}
    for i, override in overrides:
        for wanted in override.policies:
            if wanted not in keys:
                out.problems.append(
                    f"{prefix}: spec.overrides[{i}].policies: {wanted}: expected a policy placed on this "
                    f"cluster ({', '.join(sorted(keys)) or 'none'})"
                )

    for source, raw in placed.values():
        doc = copy.deepcopy(raw)
        applied = []
        if isinstance(doc, dict):
            key = f"{_namespace_of(doc)}/{_name_of(doc)}"
            for i, override in overrides:
                if override.policies and key not in override.policies:
                    continue
                notes = _apply_override(doc, override)
                out.warnings += [f"{prefix}: spec.overrides[{i}].{note} ({source})" for note in notes]
                applied.append(f"overrides[{i}]")
            spec = doc.get("spec")
            if isinstance(spec, dict):
                spec["cluster"] = cluster.name
        shown = f"{source} (with {', '.join(applied)})" if applied else source
        try:
            out.loaded.append(LoadedPolicy(parse_policy(doc, shown), shown))
        except PolicyError as err:
            out.problems += [f"{prefix}: {line}" for line in err.problems]
    if not placed and not out.problems:
        out.warnings.append(f"{prefix}: warning: no policy is placed on it, its directory lists nothing")
    return out
