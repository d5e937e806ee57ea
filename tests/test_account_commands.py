"""create_organization, create_api_key, revoke_api_key: what operators and scripts rely on."""

import threading
import time
from io import StringIO

import psycopg
import pytest
from django.core.management import CommandError, call_command
from psycopg import sql

from accounts.keys import key_hash
from accounts.models import ApiKey, Organization
from tests.factories import ApiClient
from tests.servers import database_url


def run(*args: str) -> list[str]:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue().splitlines()


@pytest.mark.django_db
def test_the_scripted_path_from_nothing_to_a_working_key():
    assert run("create_organization", "acme", "--name", "Acme Corp")[-1] == "acme"
    org = Organization.objects.get(slug="acme")
    assert org.name == "Acme Corp"
    assert sorted(org.environments.values_list("name", flat=True)) == ["production", "sandbox"]

    lines = run(
        "create_api_key",
        "--organization=acme",
        "--environment=sandbox",
        "--scopes=webhook_endpoints:read,webhook_endpoints:write",
        "--name=ci",
    )
    raw = lines[-1]
    assert raw.startswith("md_test_") and len(raw) >= 8 + 32 and raw[8:].isalnum()
    assert raw not in "\n".join(lines[:-1])  # shown once, on its own line
    stored = ApiKey.objects.get(name="ci")
    assert stored.key_hash == key_hash(raw)
    assert raw not in (stored.prefix + stored.key_hash)
    assert raw.startswith(stored.prefix)

    client = ApiClient(raw)
    assert client.create_endpoint()["webhook_endpoint_id"].startswith("we_")
    assert client.get("/v1/webhook_endpoints").status_code == 200

    revoked = run("revoke_api_key", stored.prefix)
    assert revoked[-1] == stored.prefix
    assert client.get("/v1/webhook_endpoints").status_code == 401
    # Revoking twice says so and succeeds; by id works too.
    assert "already" in run("revoke_api_key", str(stored.pk))[0]


@pytest.mark.django_db
def test_production_keys_are_live_keys():
    run("create_organization", "acme")
    raw = run(
        "create_api_key",
        "--organization",
        "acme",
        "--environment",
        "production",
        "--scopes",
        "webhook_endpoints:read",
    )[-1]
    assert raw.startswith("md_live_")
    client = ApiClient(raw)
    assert client.get("/v1/webhook_endpoints").status_code == 200
    assert client.post("/v1/webhook_endpoints", {"url": "https://x.example"}).status_code == 403


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["create_organization", "acme"], "already exists"),
        (["create_organization", "not a slug"], "invalid slug"),
        (["create_api_key", "--organization=nobody", "--environment=sandbox",
          "--scopes=events:read"], "no organization"),
        (["create_api_key", "--organization=acme", "--environment=sandbox",
          "--scopes=admin:everything"], "unknown scope"),
        (["create_api_key", "--organization=acme", "--environment=sandbox", "--scopes=,"],
         "at least one scope"),
        (["revoke_api_key", "md_test_nothing0"], "no API key"),
        (["revoke_api_key", "999999"], "no API key"),
        (["revoke_api_key", "²"], "no API key"),  # "²".isdigit() is True; int() refuses it
        (["create_organization", "a" * 65], "slug is 65 characters; at most 64"),
        (["create_organization", "acme2", "--name", "n" * 201],
         "name is 201 characters; at most 200"),
        (["create_api_key", "--organization=acme", "--environment=sandbox",
          "--scopes=events:read", "--name", "k" * 101], "name is 101 characters; at most 100"),
    ],
)  # fmt: skip
def test_bad_arguments_fail_clearly(args, message):
    run("create_organization", "acme")
    with pytest.raises(CommandError, match=message):
        run(*args)
    assert Organization.objects.count() == 1  # nothing made by the refused ones


@pytest.mark.django_db
def test_revoke_api_key_reads_an_id_in_ascii_digits_only():
    run("create_organization", "acme")
    for name in ("a", "b", "c"):
        run("create_api_key", "--organization=acme", "--environment=sandbox",
            "--scopes=events:read", f"--name={name}")  # fmt: skip
    key = ApiKey.objects.get(name="b")
    arabic = str(key.pk).translate(str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩"))
    with pytest.raises(CommandError, match="no API key"):
        run("revoke_api_key", arabic)
    assert not ApiKey.objects.filter(revoked_at__isnull=False).exists()


@pytest.mark.django_db
def test_create_organization_racing_another_for_the_same_slug_says_it_already_exists():
    """Two provisioning scripts at once: the other one's insert is not committed yet when this
    one looks, so this one's insert waits for it, then finds the slug taken. (In the test's
    transaction: a transactional test's flush would take the Operators group, which a
    migration makes, from the modules run after it.)"""
    url = database_url()
    with psycopg.connect(url) as other, psycopg.connect(url, autocommit=True) as monitor:
        other.execute(
            sql.SQL(
                "INSERT INTO {} (slug, name, created_at) VALUES ('twice', 'twice', now())"
            ).format(sql.Identifier(Organization._meta.db_table))
        )

        def commit_once_this_one_waits() -> None:
            for _ in range(1000):
                waiting = monitor.execute(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND wait_event_type = 'Lock'"
                ).fetchone()
                if waiting and waiting[0]:
                    break
                time.sleep(0.01)
            other.commit()

        committer = threading.Thread(target=commit_once_this_one_waits)
        committer.start()
        try:
            with pytest.raises(CommandError, match="organization 'twice' already exists"):
                run("create_organization", "twice")
        finally:
            committer.join(15)
        try:
            assert list(Organization.objects.values_list("slug", flat=True)) == ["twice"]
        finally:  # committed outside the test's transaction: not rolled back with it
            table = sql.Identifier(Organization._meta.db_table)
            monitor.execute(sql.SQL("DELETE FROM {} WHERE slug = 'twice'").format(table))


@pytest.mark.django_db
def test_unknown_environment_is_refused_by_the_parser():
    run("create_organization", "acme")
    with pytest.raises(CommandError, match="invalid choice"):
        run(
            "create_api_key",
            "--organization=acme",
            "--environment=staging",
            "--scopes=events:read",
        )


@pytest.mark.django_db
def test_bootstrap_demo_prints_the_same_key_every_run(settings, tmp_path):
    settings.DEBUG = True
    settings.VAR_DIR = tmp_path
    first = run("bootstrap_demo")[-1]
    second = run("bootstrap_demo")[-1]
    assert first == second
    assert first.startswith("md_test_")
    assert ApiClient(first).get("/v1/webhook_endpoints").status_code == 200
    assert (tmp_path / "demo_api_key").stat().st_mode & 0o077 == 0
    settings.DEBUG = False
    with pytest.raises(CommandError, match="local runs"):
        run("bootstrap_demo")
