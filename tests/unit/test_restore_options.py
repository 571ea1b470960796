"""Options of the restore step that the mover pods and the single-volume restore template pass: extra
mover arguments, ``--write-backup-label true|false`` and empty or comma-separated ``--uid-map`` values."""

from __future__ import annotations

import pytest

from steps.drivers import kube_objects


def test_mover_pod_appends_extra_args_after_the_restore_arguments():
    # GIVEN owner maps and the label option for one mover
    extra = ["--uid-map", "999:1000650999", "--write-backup-label"]

    # WHEN its pod is rendered with them
    pod = kube_objects.mover_pod(
        name="m", namespace="ns", pvc="data", image="img", repository="s3://b/r", snapshot_id="abc",
        labels={}, password_secret="pw", endpoint="http://s3", excludes=["tmp/*"], extra_args=extra,
    )  # fmt: skip

    # THEN they come last, exactly as the command line mover_args builds
    args = pod["spec"]["containers"][0]["args"]
    assert args[-3:] == extra
    assert args == kube_objects.mover_args(
        "s3://b/r", "abc", "/data", "http://s3", ["tmp/*"], extra_args=extra
    )


def _parse(*argv: str):
    import argparse

    from steps.commands import restore

    parser = argparse.ArgumentParser()
    restore.configure(parser)
    return parser.parse_args(["--repo", "s3://b/r", "--snapshot", "abc", "--target", "/t", *argv])


@pytest.mark.parametrize(
    ("argv", "expected"),
    [((), False), (("--write-backup-label",), True), (("--write-backup-label", "true"), True),
     (("--write-backup-label", "false"), False), (("--write-backup-label", "--json"), True)],
)  # fmt: skip
def test_write_backup_label_is_on_alone_or_takes_true_or_false(argv, expected):
    assert _parse(*argv).write_backup_label is expected


def test_id_map_values_split_at_commas_and_blanks_and_drop_empty_ones():
    from steps.commands.restore import id_map_values

    args = _parse("--uid-map", "", "--gid-map", "1000:2000:10, 0:3000", "--gid-map", "5:6")
    assert id_map_values(args.uid_map) == []
    assert id_map_values(args.gid_map) == ["1000:2000:10", "0:3000", "5:6"]


def test_write_backup_label_refuses_other_values_in_one_line(capsys):
    from steps.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(
            [
                "restore",
                "--repo",
                "s3://b/r",
                "--snapshot",
                "a",
                "--target",
                "/t",
                "--write-backup-label",
                "yes",
            ]
        )
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [
        "python -m steps restore: error: argument --write-backup-label: expected true or false, got 'yes'"
    ]


@pytest.mark.parametrize(
    "value", ["0:4294967295", "4294967295:0", "4294967290:0:6", "0:4294967290:6", "0:18446744073709551616"]
)
def test_id_maps_past_32_bits_are_refused_in_one_line(value):
    from steps.errors import UsageError
    from steps.idmap import parse_id_map

    with pytest.raises(UsageError, match=r"^--uid-map: IDs must be at most 4294967294 \(32 bits\), got '"):
        parse_id_map([value], "--uid-map")
    assert parse_id_map(["4294967290:0:5", "0:4294967294"], "--gid-map")  # the largest still accepted
