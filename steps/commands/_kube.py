"""Shared helpers of the Kubernetes-facing steps: connection arguments and the client.

Heavy modules (``kubernetes``) are imported inside the functions so that ``--help`` stays fast.
"""

from __future__ import annotations

import argparse

KUBE_EPILOG = """\
Kubernetes: --kubeconfig, else $KUBECONFIG, else the pod's service account, else ~/.kube/config;
  SNAPFLOW_KUBE_CONTEXT, SNAPFLOW_KUBE_CONNECT_TIMEOUT (5 s), SNAPFLOW_KUBE_READ_TIMEOUT (30 s),
  SNAPFLOW_KUBE_RETRIES (3)
"""


def add_kube_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("kubernetes")
    g.add_argument("--kubeconfig", metavar="FILE", help="kubeconfig file (default: see below)")
    g.add_argument("--context", metavar="NAME", help="kubeconfig context (default: the current one)")


def kube_client(args):
    from steps.drivers.kube import KubeClient, KubeSettings

    return KubeClient(
        KubeSettings.from_env(getattr(args, "kubeconfig", None), getattr(args, "context", None))
    )


def log(message: str) -> None:
    import sys

    print(message, file=sys.stderr, flush=True)
