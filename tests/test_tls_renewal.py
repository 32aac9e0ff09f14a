"""A certificate renewed in place (same paths) is used after SIGHUP's reload, without a restart."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import trustme
from cryptography import x509

from smtpguard.config import ConfigError

from .conftest import RelayFactory
from .relay_helpers import blocking_client, in_thread, port_of
from .smtp_fixtures import Certs


def served_serial(port: int, certs: Certs) -> int:
    s = blocking_client(port)
    try:
        s.starttls(context=certs.client_context())
        der = s.sock.getpeercert(binary_form=True)  # type: ignore[union-attr]
        assert der is not None
        return x509.load_der_x509_certificate(der).serial_number
    finally:
        s.quit()


async def test_reload_loads_a_renewed_certificate(make_relay: RelayFactory, certs: Certs, tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    shutil.copy(certs.cert_file, cert)
    shutil.copy(certs.key_file, key)
    relay = await make_relay(server={"tls_cert": cert, "tls_key": key})
    port = port_of(relay)
    first = await in_thread(lambda: served_serial(port, certs))

    renewed = certs.ca.issue_cert("localhost", "127.0.0.1")
    renewed.cert_chain_pems[0].write_to_path(str(cert))
    renewed.private_key_pem.write_to_path(str(key))
    await relay.reload(relay.ctx.settings)
    second = await in_thread(lambda: served_serial(port, certs))
    assert second != first
    assert second == x509.load_pem_x509_certificate(cert.read_bytes()).serial_number

    # A renewal gone wrong (a key of another certificate) is refused; the old pair stays in use.
    trustme.CA().issue_cert("localhost").private_key_pem.write_to_path(str(key))
    with pytest.raises(ConfigError):
        await relay.reload(relay.ctx.settings)
    assert await in_thread(lambda: served_serial(port, certs)) == second
