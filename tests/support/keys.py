"""OpenSSH public keys made fresh for each test run (no key files in git).

Keys ``cryptography`` can generate are serialised by it; the FIDO (sk-) keys,
which it cannot generate, are built by hand as SSH wire blobs
(PROTOCOL.u2f: string type, key data, string application), and so is DSA,
whose SSH serialisation cryptography deprecates. ``ssh-keygen -l`` reads all
of them.
"""

from __future__ import annotations

import base64
import functools
import os
import struct

from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat


def _openssh(private_key) -> str:
    return private_key.public_key().public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).decode("ascii")


def _string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def _wire(key_type: str, *fields: bytes) -> str:
    blob = _string(key_type.encode()) + b"".join(_string(f) for f in fields)
    return f"{key_type} {base64.b64encode(blob).decode('ascii')}"


@functools.lru_cache(maxsize=None)
def ed25519_key(label: str = "a") -> str:
    """``ssh-ed25519 AAAA...``; one distinct key per label."""
    return _openssh(ed25519.Ed25519PrivateKey.generate())


@functools.lru_cache(maxsize=None)
def ecdsa_key(curve: str = "nistp256") -> str:
    curves = {"nistp256": ec.SECP256R1(), "nistp384": ec.SECP384R1(), "nistp521": ec.SECP521R1()}
    return _openssh(ec.generate_private_key(curves[curve]))


@functools.lru_cache(maxsize=None)
def rsa_key(bits: int = 2048) -> str:
    return _openssh(rsa.generate_private_key(public_exponent=65537, key_size=bits))


def _mpint(n: int) -> bytes:
    return n.to_bytes(n.bit_length() // 8 + 1, "big")  # a leading 0 keeps it positive


@functools.lru_cache(maxsize=None)
def dsa_key() -> str:
    # Built by hand (RFC 4253 §6.6): cryptography deprecates DSA in SSH form.
    numbers = dsa.generate_private_key(key_size=1024).public_key().public_numbers()
    p, q, g = numbers.parameter_numbers.p, numbers.parameter_numbers.q, numbers.parameter_numbers.g
    return _wire("ssh-dss", _mpint(p), _mpint(q), _mpint(g), _mpint(numbers.y))


@functools.lru_cache(maxsize=None)
def sk_ed25519_key() -> str:
    return _wire("sk-ssh-ed25519@openssh.com", os.urandom(32), b"ssh:")


@functools.lru_cache(maxsize=None)
def sk_ecdsa_key() -> str:
    point = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        Encoding.X962, PublicFormat.UncompressedPoint
    )
    return _wire("sk-ecdsa-sha2-nistp256@openssh.com", b"nistp256", point, b"ssh:")


@functools.lru_cache(maxsize=None)
def ecdsa_key_naming_another_curve(key_type: str = "ecdsa-sha2-nistp256", curve: str = "nistp384") -> str:
    """An ECDSA blob whose type string says ``key_type`` while its curve name
    field (and point) say ``curve`` (RFC 5656 §3.1: string type, string curve, string Q)."""
    curves = {"nistp256": ec.SECP256R1(), "nistp384": ec.SECP384R1(), "nistp521": ec.SECP521R1()}
    point = ec.generate_private_key(curves[curve]).public_key().public_bytes(
        Encoding.X962, PublicFormat.UncompressedPoint
    )
    return _wire(key_type, curve.encode("ascii"), point)


def body(key: str) -> str:
    """The base64 field of ``type base64``."""
    return key.split()[1]
