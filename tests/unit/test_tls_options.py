"""TLS as the README's "Database, storage and TLS" section describes it: the client options each
URL form gives, checked on the clients themselves (nothing connects). PostgreSQL's ``sslmode``
is covered by ``tests/integration/test_postgres_tls.py``."""

from __future__ import annotations

import aiormq
import certifi
import pytest
from yarl import URL

from persistence.blobs import BlobUrlError, S3BlobStore, open_blob_store

pytestmark = pytest.mark.unit


def _ca_certs(store: object) -> object:
    assert isinstance(store, S3BlobStore)
    return store._http.connection_pool_kw["ca_certs"]


def test_an_s3_url_is_https_by_default_and_verifies_against_certifi(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    store = open_blob_store("s3://key:secret@s3.example.com/bucket")
    assert isinstance(store, S3BlobStore)
    assert store.secure
    assert repr(store).startswith("S3BlobStore(https://s3.example.com/bucket/")
    assert store._http.connection_pool_kw["cert_reqs"] == "CERT_REQUIRED"
    assert _ca_certs(store) == certifi.where()


def test_an_s3_url_may_name_a_ca_bundle_of_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", "/etc/ssl/from-env.pem")
    assert _ca_certs(open_blob_store("s3://k:s@minio:9000/bucket")) == "/etc/ssl/from-env.pem"
    named = open_blob_store("s3://k:s@minio:9000/bucket?ca_file=/run/secrets/ca%20bundle.pem")
    assert _ca_certs(named) == "/run/secrets/ca bundle.pem"


def test_an_unknown_s3_tls_option_is_refused() -> None:
    with pytest.raises(BlobUrlError, match="cafile"):
        open_blob_store("s3://k:s@minio:9000/bucket?cafile=/x.pem")


async def test_amqps_takes_the_ca_and_a_client_certificate_from_the_url() -> None:
    connection = aiormq.Connection(
        URL("amqps://worker:pw@rabbit.example.com/?cafile=/ca.pem&certfile=/c.pem&keyfile=/k.pem")
    )
    assert connection.url.port == 5671, "amqps defaults to the TLS port"
    assert connection.ssl_certs.cafile == "/ca.pem"
    assert (connection.ssl_certs.cert, connection.ssl_certs.key) == ("/c.pem", "/k.pem")
    assert connection.ssl_certs.verify

