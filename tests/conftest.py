"""Test configuration: every module in tests/fixtures/ is loaded as a pytest plugin (shared fixtures), and
the tests that start something heavy are marked ``slow`` here, from what they use, so that
``make test-fast`` (``-m 'not slow'``) runs in well under a minute and ``make test`` still runs
everything.

A test is slow when it uses (directly or through another fixture) one of :data:`SLOW_FIXTURES`: an S3
server (SeaweedFS), the fake Kubernetes API server, a database or etcd server, Chromium, a loop device
or a btrfs mount, or a local server standing in for Argo's or an S3 endpoint; when it lies in one of
:data:`SLOW_PATHS` (the behaviour scenarios run whole pipelines over real repositories, most of them
as ``python -m steps`` processes; unit modules that interleave or render at length); or when it is
listed in :data:`SLOW_TESTS` (a pip install into a new venv, and unit tests measured at a second or
more). A module may also mark itself. tests/unit/test_slow_marking.py checks that every entry names
something that exists.
"""

import pkgutil
from pathlib import Path

import pytest

pytest_plugins = [
    f"tests.fixtures.{m.name}"
    for m in pkgutil.iter_modules([str(Path(__file__).parent / "fixtures")])
    if not m.name.startswith("_")
]

SLOW_FIXTURES = frozenset(
    {
        # object stores
        "s3_server",
        "private_s3_server",
        "locked_s3_server",
        "trickle_proxy",
        # the fake Kubernetes API server
        "kube_server",
        "kube_server_1_20",
        "fake_cluster",
        # databases, etcd, a browser
        "postgres_server",
        "mariadb_server",
        "redis_server",
        "etcd_server",
        "etcd_servers",
        "shared_etcd",
        "chromium",
        # block devices and file systems
        "btrfs_mount",
        "loop_device",
        # local stand-ins for Argo's server
        "argo_server",
        "garbage_server",
    }
)

# prefixes of paths relative to tests/: a folder, a module, or the start of modules' names
SLOW_PATHS = (
    "scenarios/",
    "unit/test_fake_kubeapi",  # the fake API server's own tests start it
    "unit/test_verify_concurrent_prune.py",  # readers stopped at every store operation of a prune
    "unit/test_prune_interleavings.py",  # prune and backups interleaved at every store operation
    "unit/test_workflows_validate.py",  # every rendered manifest against the Kubernetes schemas
    "unit/test_fleet_render.py",  # renders every policy of several clusters
    "unit/test_copy_block_tracking_cli.py",  # copy processes
)

# (module path relative to tests/, test function name): slow without a slow fixture
SLOW_TESTS = frozenset(
    {
        ("unit/test_step_image.py", "test_every_step_answers_help_in_a_venv_built_like_the_image"),
        # processes and whole renderings, measured at a second or more
        (
            "unit/test_step_image.py",
            "test_the_image_leaves_the_demo_out_and_nothing_it_ships_imports_the_demo",
        ),
        ("unit/test_step_image.py", "test_data_steps_import_neither_hera_nor_kubernetes"),
        ("unit/test_render.py", "test_lint_passes_the_examples_and_lists_what_they_need"),
        ("unit/test_render.py", "test_render_twice_gives_identical_files"),
        ("unit/test_render.py", "test_a_bad_policy_prints_one_line_per_problem_and_writes_nothing"),
        ("unit/test_render.py", "test_render_writes_one_file_per_object_and_a_kustomization"),
        ("unit/test_repository_index.py", "test_memory_per_entry_is_about_64_bytes"),
        ("unit/test_cli_errors.py", "test_hostile_inputs_to_both_command_lines_give_one_line_each"),
        ("unit/test_manifests_scope.py", "test_without_the_flag_nothing_allowed_reaches_outside_the_scope"),
        (
            "unit/test_etcd_restore_arguments.py",
            "test_bad_member_arguments_are_named_before_anything_is_read",
        ),
        ("unit/test_block_copy.py", "test_rechunking_around_changes_gives_a_full_reads_content_list"),
        (
            "unit/test_schedule_cron.py",
            "test_lint_warns_about_a_schedule_daylight_saving_time_skips_and_doubles",
        ),
        ("unit/test_objectstore.py", "test_put_get_stat_list_delete_round_trip"),
        ("unit/test_workflows_restore_test.py", "test_the_rendered_restore_test_passes_strict_validation"),
        (
            "unit/test_workflows_mover_namespace.py",
            "test_a_policy_with_a_mover_namespace_renders_everything_the_workflows_use_beside_them",
        ),
        (
            "unit/test_manifests_untrusted_shapes.py",
            "test_any_shape_of_captured_fields_is_handled_or_refused_in_one_error",
        ),
        ("unit/test_fleet_rules.py", "test_every_alert_fires_on_its_synthetic_series_and_only_then"),
        ("unit/test_repository_cli.py", "test_copy_reports_argo_progress_and_prints_the_snapshot_id_last"),
    }
)

TESTS = Path(__file__).parent


def is_slow(item: pytest.Item) -> bool:
    if SLOW_FIXTURES.intersection(getattr(item, "fixturenames", ())):
        return True
    path = Path(str(item.path))
    rel = path.relative_to(TESTS).as_posix() if path.is_relative_to(TESTS) else path.as_posix()
    return rel.startswith(SLOW_PATHS) or (rel, getattr(item, "originalname", item.name)) in SLOW_TESTS


def pytest_collection_modifyitems(config, items):
    for item in items:
        if is_slow(item) and item.get_closest_marker("slow") is None:
            item.add_marker(pytest.mark.slow)
