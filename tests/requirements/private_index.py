"""A package index on loopback over HTTPS with a self-signed certificate.

It stands for a company's private index, which pip reaches only with the
``--trusted-host`` line of the model's ``requirements.txt``.
"""

from __future__ import annotations

import datetime
import functools
import ipaddress
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.http_threads import LoopbackHTTPServer, serving
from tests.requirements.wheels import build_wheel


def _self_signed(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def private_index(folder: Path, project: str, version: str) -> Iterator[str]:
    """Serve ``project==version`` under ``https://127.0.0.1:<port>/simple/``; yield that URL."""
    project_dir = folder / "simple" / project.replace("_", "-")
    wheel = build_wheel(project_dir, version, name=project)
    (project_dir / "index.html").write_text(f'<a href="{wheel.name}">{wheel.name}</a>\n')
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*_self_signed(folder))
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = LoopbackHTTPServer(handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    with serving(server):
        yield f"https://127.0.0.1:{server.server_address[1]}/simple/"
