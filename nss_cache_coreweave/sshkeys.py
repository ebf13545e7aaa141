"""Validate OpenSSH public keys with ``cryptography`` (used by policy).

A key reaches sshkey.cache only as ``type base64 [comment]`` on one line,
with a type we allow, a body that decodes to that same type, and an RSA
modulus of at least 2048 bits.
"""

from __future__ import annotations

import re
from typing import Mapping

from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_ssh_public_key

__all__ = ["InvalidKey", "KEY_TYPES", "DEFAULT_KEY_TYPES", "MIN_RSA_BITS", "normalise"]

# OpenSSH key type -> the family name used in configuration.
KEY_TYPES: Mapping[str, str] = {
    "ssh-ed25519": "ed25519",
    "ecdsa-sha2-nistp256": "ecdsa",
    "ecdsa-sha2-nistp384": "ecdsa",
    "ecdsa-sha2-nistp521": "ecdsa",
    "sk-ssh-ed25519@openssh.com": "sk-ed25519",
    "sk-ecdsa-sha2-nistp256@openssh.com": "sk-ecdsa",
    "ssh-rsa": "rsa",
}
DEFAULT_KEY_TYPES = frozenset({"ed25519", "ecdsa", "sk-ed25519", "sk-ecdsa", "rsa"})
MIN_RSA_BITS = 2048
MAX_KEY_LENGTH = 16384
_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}", re.ASCII)
_PRINTABLE = re.compile(r"[\x20-\x7e]*", re.ASCII)


class InvalidKey(ValueError):
    """The reason a key was refused, fit for a log line."""


def normalise(line: object, *, allowed=DEFAULT_KEY_TYPES, min_rsa_bits: int = MIN_RSA_BITS) -> str:
    """Return ``type base64[ comment]`` for a valid key, else raise InvalidKey."""
    if not isinstance(line, str):
        raise InvalidKey(f"is a JSON {type(line).__name__}, not a string")
    if len(line) > MAX_KEY_LENGTH:
        raise InvalidKey(f"is longer than {MAX_KEY_LENGTH} characters")
    if any(c in line for c in "\r\n\0"):
        raise InvalidKey("contains a line break or NUL")
    fields = line.strip().split(None, 2)
    if len(fields) < 2:
        raise InvalidKey("is not 'type base64 [comment]'")
    key_type, body = fields[0], fields[1]
    comment = fields[2].strip() if len(fields) == 3 else ""
    if key_type == "ssh-dss":
        raise InvalidKey("is a DSA key, which is not accepted")
    if key_type not in KEY_TYPES:
        raise InvalidKey(f"has unknown type {key_type[:40]!r} (or authorized_keys options, which are not accepted)")
    if KEY_TYPES[key_type] not in allowed:
        raise InvalidKey(f"has type {key_type}, which is not allowed here")
    if not _BASE64.fullmatch(body):
        raise InvalidKey("has a body that is not base64")
    try:
        key = load_ssh_public_key(f"{key_type} {body}".encode("ascii"))
    except (ValueError, TypeError) as e:
        raise InvalidKey(f"does not decode as a {key_type} key ({e})") from None
    except Exception as e:  # cryptography raises UnsupportedAlgorithm for odd curves
        raise InvalidKey(f"cannot be loaded ({type(e).__name__})") from None
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < min_rsa_bits:
        raise InvalidKey(f"is a {key.key_size}-bit RSA key, below the {min_rsa_bits}-bit minimum")
    if comment and not _PRINTABLE.fullmatch(comment):
        comment = ""  # a comment is decoration: drop it rather than the key
    return f"{key_type} {body} {comment}" if comment else f"{key_type} {body}"
