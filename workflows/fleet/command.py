"""What ``snapflow exporter`` does with its arguments: check them, then render, print once, or serve.

Bad input is one :class:`~steps.errors.UsageError` line naming the flag. Called by
:mod:`workflows.cli.cmd_exporter`.
"""

from __future__ import annotations

import re
import signal
import sys
import threading

import yaml

from steps.api import UsageError, canonical_repo_url, check_endpoint
from workflows.fleet import objects, rules
from workflows.fleet.exporter import Exporter, serve
from workflows.fleet.model import Targets, targets_from_policies

_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def parse_duration(text: str, flag: str) -> float:
    """``90``, ``90s``, ``15m``, ``26h``, ``8d``, ``1w`` as seconds (positive)."""
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([smhdw]?)\s*", text or "")
    if not m or float(m.group(1)) <= 0:
        raise UsageError(f"{flag}: expected a positive duration like 90s, 15m, 26h or 8d, got {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise UsageError(
            f"--listen: expected HOST:PORT like 0.0.0.0:9464 (port 0: any free port), got {text!r}"
        )
    return host.strip("[]") or "0.0.0.0", int(port)


def _policy_files(paths: list[str]) -> list[str]:
    from pathlib import Path

    out: list[str] = []
    for p in paths:
        path = Path(p)
        if path.is_dir():  # a mounted ConfigMap: every YAML file in it
            found = sorted(str(f) for f in path.iterdir() if f.suffix in (".yaml", ".yml") and f.is_file())
            if not found:
                raise UsageError(
                    f"--policy {p}: expected policy files (*.yaml, *.yml) in the directory, found none"
                )
            out += found
        else:
            out.append(p)
    return out


def _settings(args) -> objects.DeploySettings:
    if not args.namespace or not _NAME_RE.match(args.namespace):
        raise UsageError(
            f"--namespace: expected a namespace name (needed by --render), got {args.namespace!r}"
        )
    secret, _, key = args.password_secret.partition(":")
    if not _NAME_RE.match(secret) or (key and not re.fullmatch(r"[-._a-zA-Z0-9]+", key)):
        raise UsageError(
            f"--password-secret: expected NAME or NAME:KEY of a Secret, got {args.password_secret!r}"
        )
    for flag, value in (
        ("--credentials-secret", args.credentials_secret),
        ("--policy-config-map", args.policy_config_map),
    ):
        if value is not None and not _NAME_RE.match(value):
            raise UsageError(f"{flag}: expected the name of a Kubernetes object, got {value!r}")
    labels = {}
    for item in args.label:
        k, sep, v = item.partition("=")
        if not sep or not k:
            raise UsageError(f"--label: expected KEY=VALUE, got {item!r}")
        labels[k] = v
    extra = [
        f"--rpo={args.rpo}",
        f"--freeze-budget={args.freeze_budget}",
        f"--restore-test-max-age={args.restore_test_max_age}",
        f"--commit-deadline={args.commit_deadline}",
    ]
    kwargs = {"image": args.image} if args.image else {}
    return objects.DeploySettings(
        namespace=args.namespace,
        repos=tuple(args.repo),
        endpoint=args.endpoint,
        interval_s=parse_duration(args.interval, "--interval"),
        password_secret=secret,
        password_key=key or "password",
        credentials_secret=args.credentials_secret,
        policy_config_map=args.policy_config_map,
        extra_args=tuple(extra),
        labels=labels,
        runbook_base=args.runbook_base,
        **kwargs,
    )


def run_exporter(args) -> int:
    if args.dashboard:
        from workflows.fleet import dashboard

        sys.stdout.write(dashboard.to_json(dashboard.build()))
        return 0
    if args.rules:
        sys.stdout.write(yaml.safe_dump({"groups": rules.rule_groups(args.runbook_base)}, sort_keys=False))
        return 0
    if not args.repo:
        raise UsageError("--repo: expected at least one repository URL")
    args.repo = [canonical_repo_url(url) for url in args.repo]
    if args.endpoint:
        args.endpoint = check_endpoint(args.endpoint)
    default = Targets(
        rpo_s=parse_duration(args.rpo, "--rpo"),
        freeze_budget_s=parse_duration(args.freeze_budget, "--freeze-budget"),
        restore_test_max_age_s=None
        if args.restore_test_max_age == "off"
        else parse_duration(args.restore_test_max_age, "--restore-test-max-age"),
        commit_deadline_s=parse_duration(args.commit_deadline, "--commit-deadline"),
    )
    interval = parse_duration(args.interval, "--interval")
    if args.render:
        rendered = objects.render_objects(_settings(args))
        problems = objects.validate_objects(rendered)
        if problems:
            for line in problems:
                print(f"error: {line}", file=sys.stderr)
            return 1
        sys.stdout.write(yaml.safe_dump_all(rendered, sort_keys=False))
        return 0
    host, port = parse_listen(args.listen)
    targets = targets_from_policies(_policy_files(args.policy), default) if args.policy else {}
    exporter = Exporter(
        args.repo, endpoint=args.endpoint, interval_s=interval, default_targets=default, targets=targets
    )
    if args.once:
        from prometheus_client import generate_latest

        from workflows.fleet.exporter import registry_for

        exporter.refresh()
        sys.stdout.write(generate_latest(registry_for(exporter)).decode())
        return 0 if all(st.up for st in exporter.states) else 1
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    server, _thread = serve(exporter, host, port)
    exporter.start()
    print(
        f"serving /metrics on {host}:{server.server_address[1]} for {len(args.repo)} repository(ies)",
        file=sys.stderr,
    )
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
    exporter.stop()
    server.shutdown()
    return 0
