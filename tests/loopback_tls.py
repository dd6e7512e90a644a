"""A throwaway CA and an HTTPS server on loopback that it vouches for (TLS verification tests)."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from helpers import HOST


def certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA (its PEM) and a server certificate for 127.0.0.1 it signed (PEM, key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)

    def build(subject: str, key: Any, issuer: str, signer: Any, *, ca: bool, extra: list[Any]) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        )
        for extension, critical in extra:
            builder = builder.add_extension(extension, critical=critical)
        return builder.sign(signer, hashes.SHA256())

    ca_key, server_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    usage = dict.fromkeys(
        ("content_commitment", "data_encipherment", "key_agreement", "encipher_only", "decipher_only"), False
    )
    ca = build(
        "test CA",
        ca_key,
        "test CA",
        ca_key,
        ca=True,
        extra=[
            (
                x509.KeyUsage(
                    digital_signature=True, key_cert_sign=True, crl_sign=True, key_encipherment=False, **usage
                ),
                True,
            )
        ],
    )
    server = build(
        HOST,
        server_key,
        "test CA",
        ca_key,
        ca=False,
        extra=[
            (x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(HOST))]), False),
            (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False),
            (x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False),
            (
                x509.KeyUsage(
                    digital_signature=True, key_cert_sign=False, crl_sign=False, key_encipherment=False, **usage
                ),
                True,
            ),
        ],
    )
    paths = folder / "ca.pem", folder / "server.pem", folder / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return paths


@asynccontextmanager
async def https_server(folder: Path) -> AsyncIterator[tuple[str, Path]]:
    """An HTTPS server on loopback answering every request 200 ``ok``: (its URL, its CA's PEM)."""
    ca, cert, key = certificates(folder)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError, ssl.SSLError):
            pass  # a client that refused our certificate
        finally:
            writer.close()

    server = await asyncio.start_server(answer, HOST, 0, ssl=context)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield f"https://{HOST}:{port}/", ca
