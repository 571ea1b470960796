"""The scenarios of test_restore_hostile_properties.py, restored with two file creators (the restore's thread
and a second process, steps/repository/file_creator.py) from the first small file on."""

import pytest

from tests.scenarios.test_restore_hostile_properties import *  # noqa: F403

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("two_file_creators")]
