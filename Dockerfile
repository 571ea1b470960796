# The step image: every Argo step of Snapflow runs `python -m steps <step> ...` in it.
FROM python:3.11-slim-bookworm

# util-linux: fsfreeze; e2fsprogs/xfsprogs/btrfs-progs: inspecting cloned volumes; tini reaps children;
# etcd-client: etcdctl, which etcd-restore writes a member's data directory with (`snapshot restore`) and
# etcd-snapshot cross-checks a snapshot's revision with (`snapshot status`). Debian 12 ships etcd 3.4's
# etcdctl: a snapshot of another etcd minor version needs that version's etcdutl (--etcd-tool).
RUN apt-get update \
 && apt-get install -y --no-install-recommends util-linux e2fsprogs xfsprogs btrfs-progs tini ca-certificates \
      etcd-client \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/snapflow
COPY pyproject.toml README.md ./
COPY steps ./steps
# (without workflows/demo: .dockerignore keeps the demo's servers and sandboxes out of the image)
COPY workflows ./workflows
COPY templates ./templates
RUN pip install --no-cache-dir . && rm -rf /root/.cache

ENV SNAPFLOW_TEMPLATES=/opt/snapflow/templates \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

# Steps run as an unprivileged user unless a hook needs more (fsfreeze runs in the app's pod).
RUN useradd --uid 65532 --create-home --shell /usr/sbin/nologin snapflow
USER 65532

ENTRYPOINT ["/usr/bin/tini", "--", "python", "-m", "steps"]
CMD ["--help"]
