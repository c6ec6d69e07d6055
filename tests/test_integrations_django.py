"""docs/integrations/django.md, followed step by step in a new Django project against the test database."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

import pageq
from docs_helpers import follow

pytest.importorskip("django")


@pytest.fixture
def django_schema(dsn: str, schema: str) -> Iterator[str]:
    """A schema of its own for the Django project's tables (tests share the database)."""
    name = f"{schema}_dj"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {name}")
    yield name
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {name} CASCADE")


def test_the_django_page_leads_to_a_working_worker(
    app: pageq.App, dsn: str, env: dict[str, str], django_schema: str, tmp_path: Path
) -> None:
    # the page's DATABASES: PAGEQ_DSN; Django's tables in a schema of the test (public in Django's test db)
    env = env | {"PGOPTIONS": f"-c search_path={django_schema},public"}

    def before(command: str) -> None:
        if "manage.py test" in command:  # a test database of its own (test runs may share the server)
            settings = tmp_path / "mysite" / "settings.py"
            test = {"NAME": f"test_{django_schema}"}
            settings.write_text(settings.read_text() + f"\nDATABASES['default']['TEST'] = {test!r}\n")

    def receipt_written() -> bool:
        jobs = app.list_jobs(queue="emails")
        return bool(jobs) and all(job.state is pageq.JobState.SUCCEEDED for job in jobs)

    outputs = follow("integrations/django.md", tmp_path, env, receipt_written, before=before)
    assert "[{'order_id': 1}]" in outputs[-2]  # the rolled back order has no job
    assert "Ran 1 test" in outputs[-1] and "OK" in outputs[-1]  # manage.py test
    (job,) = app.list_jobs(queue="emails")
    assert job.result == "Thank you! Order 1: 42 EUR"


def test_misconfigurations_are_one_line_errors(tmp_path: Path, env: dict[str, str]) -> None:
    (tmp_path / "bare.py").write_text(
        "INSTALLED_APPS = ['pageq.contrib.django']\nSECRET_KEY = 'x'\n"
        "DATABASES = {'default': {'ENGINE': 'django.db.backends.sqlite3', 'NAME': ':memory:'},"
        " 'pg': {'ENGINE': 'django.db.backends.postgresql', 'NAME': 'shop', 'HOST': 'db', 'PORT': 5433,"
        " 'USER': 'u', 'PASSWORD': 'p w', 'OPTIONS': {'sslmode': 'require', 'server_side_binding': True}}}\n"
    )
    env = env | {"PYTHONPATH": f"{tmp_path}:{env['PYTHONPATH']}", "DJANGO_SETTINGS_MODULE": "bare"}
    worker = subprocess.run(
        [sys.executable, "-m", "django", "pageq_worker"], env=env, capture_output=True, text=True, timeout=60
    )
    assert worker.returncode == 1 and "PAGEQ_APP" in worker.stderr, worker.stderr
    check = (
        "import django; django.setup(); from pageq.contrib.django import database_dsn as d; print(d('pg'))\n"
        "try: d('default')\nexcept Exception as e: print(type(e).__name__, e)\n"
        "try: d('nope')\nexcept Exception as e: print(type(e).__name__, e)\n"
        "from pageq.contrib.django import database_settings as s\n"
        "print(sorted(s('postgresql://u:p@h:5433/n?sslmode=require').items()))\n"
    )
    out = subprocess.run([sys.executable, "-c", check], env=env, capture_output=True, text=True, timeout=60)
    assert out.stdout.splitlines() == [
        "dbname=shop user=u password='p w' host=db port=5433 sslmode=require",
        "ImproperlyConfigured pageq needs a PostgreSQL database; 'default' uses django.db.backends.sqlite3",
        "ImproperlyConfigured pageq: no database 'nope' in settings.DATABASES",
        "[('ENGINE', 'django.db.backends.postgresql'), ('HOST', 'h'), ('NAME', 'n'), "
        "('OPTIONS', {'sslmode': 'require'}), ('PASSWORD', 'p'), ('PORT', '5433'), ('USER', 'u')]",
    ], out.stderr
