"""Worker transactions do not wait for the WAL flush unless configured to (see the setting)."""

import pytest
from django.db import connections
from django.db.backends.signals import connection_created

from config.celery_app import worker_commits_without_waiting_for_the_disk


def _synchronous_commit_of_a_new_connection() -> str:
    connections["default"].close()
    with connections["default"].cursor() as cursor:
        cursor.execute("SHOW synchronous_commit")
        return str(cursor.fetchone()[0])


@pytest.mark.parametrize(("configured", "expected"), [(False, "off"), (True, "on")])
def test_a_worker_commits_asynchronously_unless_told_otherwise(
    transactional_db, settings, configured, expected
):
    assert _synchronous_commit_of_a_new_connection() == "on"  # the web, the API, publishing
    settings.WEBHOOKS_WORKER_SYNCHRONOUS_COMMIT = configured
    worker_commits_without_waiting_for_the_disk()  # on worker_init, as `celery worker` starts
    try:
        assert _synchronous_commit_of_a_new_connection() == expected
    finally:
        connection_created.disconnect(dispatch_uid="worker-async-commit")
        connections["default"].close()
