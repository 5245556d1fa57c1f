"""The Go design's row: its database URL for pgx, and a build that cannot happen."""

from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from ecommerce.flashsale import goseed


def test_the_database_url_is_given_to_pgx_as_libpq_reads_it():
    url = "postgresql+psycopg2://shop:secret@/ecommerce_goseed?host=/run/pg"
    given = urlsplit(goseed.libpq_url(url))
    assert given.scheme == "postgresql" and given.netloc == "shop:secret@"
    assert given.path == "/ecommerce_goseed" and parse_qs(given.query) == {"host": ["/run/pg"]}


def test_a_missing_source_is_a_reason_not_a_failure(tmp_path: Path):
    reason = goseed.build(tmp_path / "nowhere", tmp_path / "out")
    assert isinstance(reason, str)
    assert "Go" in reason
