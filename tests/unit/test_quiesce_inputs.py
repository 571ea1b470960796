"""What the freeze holder accepts: plan fields with the wrong type fail with one line naming the field;
hook parameters named like credentials are refused; hooks run here never see Snapflow's credentials."""

from __future__ import annotations

import pytest

from steps.drivers.runner_local import CREDENTIAL_ENV, LocalRunner
from steps.errors import UsageError
from steps.plan import Target, plan_from_dict
from steps.quiesce.hook_specs import check_params
from tests.fixtures.quiesce import local_plan


def _plan(**changes):
    plan = local_plan([{"name": "app", "hook": "none"}], [{"name": "v", "path": "/srv/v"}])
    plan.update(changes)
    return plan


@pytest.mark.parametrize(
    "changes, field, expected",
    [
        ({"freeze": {"deadline_s": "abc"}}, "freeze.deadline_s", "number of seconds"),
        ({"freeze": {"keepalive_s": True}}, "freeze.keepalive_s", "number of seconds"),
        ({"freeze": {"keepalive_s": 0}}, "freeze.keepalive_s", "positive"),
        ({"freeze": "30s"}, "freeze", "JSON object"),
        ({"snapshot": {"driver": "local", "timeout_s": "10m"}}, "snapshot.timeout_s", "number of seconds"),
        ({"targets": "x"}, "targets", "expected a list"),
        ({"targets": ["x"]}, "targets[0]", "JSON object"),
        ({"volumes": "x"}, "volumes", "expected a list"),
        ({"volumes": [7]}, "volumes[0]", "JSON object"),
    ],
)
def test_a_plan_field_of_the_wrong_type_is_one_usage_error_naming_it(changes, field, expected):
    with pytest.raises(UsageError) as err:
        plan_from_dict(_plan(**changes), "plan.json")
    message = str(err.value)
    assert message.startswith(f"plan.json: {field}") or f": {field}:" in message, message
    assert expected in message and "\n" not in message


@pytest.mark.parametrize(
    "name",
    ["password", "db_password", "PGPASSWORD", "MYSQL_PWD", "passwd", "api_token", "apiKey", "access_key",
     "secret", "client_secret", "auth", "key", "ssl_key", "passphrase", "credentials"],
)  # fmt: skip
def test_parameters_named_like_credentials_are_refused(name):
    target = Target("app", "postgresql", local=True, params={name: "hunter2-value"})
    with pytest.raises(UsageError) as err:
        check_params(target, "targets[0]")
    assert f"targets[0].params.{name}" in str(err.value)
    assert "hunter2-value" not in str(err.value)


@pytest.mark.parametrize(
    "name, value",
    [
        ("password_file", "/etc/app/password"),
        ("password_env", "APP_DB_PASSWORD"),
        ("PGPASSWORD_FILE", "/run/secrets/pg"),
        ("token_env", "APP_TOKEN"),
        ("auth_db", "admin"),
        ("user", "backup"),
        ("host", "127.0.0.1"),
        ("lock_wait_timeout_s", 5),
    ],
)
def test_references_and_ordinary_parameters_are_accepted(name, value):
    check_params(Target("app", "postgresql", local=True, params={name: value}), "targets[0]")


def test_a_password_env_holding_a_value_is_refused_without_echoing_it():
    target = Target("app", "postgresql", local=True, params={"password_env": "s3cr3t value!"})
    with pytest.raises(UsageError) as err:
        check_params(target, "targets[0]")
    assert "targets[0].params.password_env" in str(err.value) and "s3cr3t" not in str(err.value)


@pytest.mark.parametrize("variable", CREDENTIAL_ENV)
def test_a_local_hook_cannot_borrow_snapflows_own_credentials(variable):
    with pytest.raises(UsageError, match=r"params\.password_env"):
        check_params(Target("app", "postgresql", local=True, params={"password_env": variable}), "targets[0]")
    # in a pod, the variable is the application container's own
    check_params(Target("app", "postgresql", pod="db-0", params={"password_env": variable}), "targets[0]")


def test_local_commands_run_without_snapflows_credentials(monkeypatch):
    # GIVEN the holder's environment with the repository's and the object store's credentials
    for variable in CREDENTIAL_ENV:
        monkeypatch.setenv(variable, f"value-of-{variable}")
    monkeypatch.setenv("APP_DB_PASSWORD", "the-apps-own")

    # WHEN a hook command and a hook session run here
    out = LocalRunner().run(["env"], timeout=10).stdout
    session = LocalRunner(env={"EXTRA": "1"}).open_session(["sh", "-c", "env; echo SNAPFLOW-END"])
    lines = []
    while (line := session.read_line(5)) not in (None, "SNAPFLOW-END"):
        lines.append(line)
    session.kill()

    # THEN neither sees Snapflow's credentials; the application's own variables are still there
    for text in (out, "\n".join(lines)):
        assert "value-of-" not in text
        assert "APP_DB_PASSWORD=the-apps-own" in text
    assert "EXTRA=1" in lines
