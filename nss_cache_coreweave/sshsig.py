"""OpenSSH signatures (SSHSIG, OpenSSH's PROTOCOL.sshsig) over bytes, ed25519 only.

``sign`` writes exactly what ``ssh-keygen -Y sign -n nsscache-coreweave`` writes for
the same key and message, so anyone can check a published manifest with
``ssh-keygen -Y verify``; ``verify`` accepts only what the publisher's keys signed,
in our namespace. Nothing here ever puts key material into a message.

Blob (PROTOCOL.sshsig §2), base64 between the armor lines (§1)::

    byte[6] "SSHSIG"  uint32 1  string publickey  string namespace
    string reserved  string hash_algorithm  string signature

The signature covers (§3) ``"SSHSIG" string namespace  string reserved
string hash_algorithm  string H(message)``.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import stat
import struct
from dataclasses import dataclass
from enum import Enum, unique
from typing import Dict, Sequence, Tuple

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_ssh_private_key

from .errors import CoreWeaveError

__all__ = [
    "NAMESPACE",
    "KEY_TYPE",
    "KeyFileError",
    "SignatureError",
    "SignatureReason",
    "load_private_key",
    "read_public_keys",
    "public_key_line",
    "fingerprint",
    "sign",
    "verify",
]

NAMESPACE = "nsscache-coreweave"
KEY_TYPE = "ssh-ed25519"
HASH = "sha512"  # what ssh-keygen -Y sign uses by default
_HASHES = ("sha512", "sha256")  # the two PROTOCOL.sshsig allows
_MAGIC = b"SSHSIG"
_VERSION = 1
_BEGIN = b"-----BEGIN SSH SIGNATURE-----"
_END = b"-----END SSH SIGNATURE-----"
_WRAP = 70  # ssh-keygen's sshbuf_dtob64 line width
_MAX_ARMORED = 64 * 1024  # an ed25519 signature is ~300 bytes; refuse anything absurd unread
_MAX_KEY_FILE = 64 * 1024
_ARMOR_LINE = re.compile(rb"[A-Za-z0-9+/]+={0,2}", re.ASCII)
_KEY_LINE_TYPE = re.compile(r"[A-Za-z0-9@.+-]{1,64}", re.ASCII)  # printable for a message, or not quoted
_ED25519_BYTES = 32
_ED25519_SIGNATURE_BYTES = 64


class KeyFileError(CoreWeaveError, ValueError):
    """A key file (or key text) we cannot use: ``path`` is the file ("" for text
    that came without one), ``reason`` says what is wrong and what to do. Neither
    ever holds key material."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(path, reason)
        self.path, self.reason = path, reason

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}" if self.path else f"public keys: {self.reason}"


@unique
class SignatureReason(str, Enum):
    """Why a signature was refused."""

    ARMOR = "armor"  # not one "-----BEGIN SSH SIGNATURE-----" ... "-----END SSH SIGNATURE-----" block
    FORMAT = "format"  # the blob inside is not the SSHSIG layout
    VERSION = "version"  # SSHSIG version other than 1
    NAMESPACE = "namespace"  # signed for another use (ssh-keygen -n file, ...)
    HASH = "hash"  # a hash other than sha512 / sha256
    KEY_TYPE = "key_type"  # signed with a key other than ssh-ed25519
    UNTRUSTED_KEY = "untrusted_key"  # a well-formed signature by a key not in the trusted list
    BAD_SIGNATURE = "bad_signature"  # the trusted key did not sign these bytes


_ADVICE: Dict[SignatureReason, str] = {
    SignatureReason.ARMOR: "the file must hold exactly what `ssh-keygen -Y sign` writes; fetch or sign it again",
    SignatureReason.FORMAT: "the signature is damaged or not an SSHSIG signature; fetch or sign it again",
    SignatureReason.VERSION: "only SSHSIG version 1 is understood; sign again with `ssh-keygen -Y sign`",
    SignatureReason.NAMESPACE: f"sign with the namespace {NAMESPACE!r} (`ssh-keygen -Y sign -n {NAMESPACE}`)",
    SignatureReason.HASH: "sign with sha512 (the default of `ssh-keygen -Y sign`) or sha256",
    SignatureReason.KEY_TYPE: "sign with an ssh-ed25519 key (`ssh-keygen -t ed25519`)",
    SignatureReason.UNTRUSTED_KEY: (
        "if the publisher's key changed, add its new .pub line to the trusted keys file "
        "(keep the old line until every publisher uses the new key)"
    ),
    SignatureReason.BAD_SIGNATURE: (
        "the signed bytes were changed after signing, or damaged in transit; do not use them, publish again"
    ),
}


class SignatureError(CoreWeaveError, ValueError):
    """A signature refused: ``reason`` (a :class:`SignatureReason`) and ``detail``,
    what exactly was found (never key material; a key is named by its fingerprint)."""

    def __init__(self, reason: SignatureReason, detail: str = "") -> None:
        super().__init__(reason, detail)
        self.reason, self.detail = reason, detail

    def __str__(self) -> str:
        detail = f" ({self.detail})" if self.detail else ""
        return f"refusing the SSH signature: {self.reason.value}{detail}: {_ADVICE[self.reason]}"


# --- the SSH wire format (RFC 4251 §5) ----------------------------------------


def _string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def _take_string(data: bytes, offset: int) -> Tuple[bytes, int]:
    """The string at ``offset`` and the offset after it; FORMAT when it runs past the end."""
    if offset + 4 > len(data):
        raise SignatureError(SignatureReason.FORMAT, "truncated")
    (length,) = struct.unpack_from(">I", data, offset)
    end = offset + 4 + length
    if end > len(data):
        raise SignatureError(SignatureReason.FORMAT, "truncated")
    return data[offset + 4 : end], end


def _take_strings(data: bytes, offset: int, count: int) -> Tuple[bytes, ...]:
    """Exactly ``count`` strings from ``offset`` to the end; FORMAT on trailing bytes."""
    fields = []
    for _ in range(count):
        field, offset = _take_string(data, offset)
        fields.append(field)
    if offset != len(data):
        raise SignatureError(SignatureReason.FORMAT, f"{len(data) - offset} trailing bytes")
    return tuple(fields)


def _ed25519_blob(raw: bytes) -> bytes:
    return _string(KEY_TYPE.encode()) + _string(raw)


def _ed25519_raw(blob: bytes) -> bytes:
    """The 32 key bytes of an ssh-ed25519 public key blob; SignatureError(FORMAT) if it is not one."""
    key_type, raw = _take_strings(blob, 0, 2)
    if key_type != KEY_TYPE.encode() or len(raw) != _ED25519_BYTES:
        raise SignatureError(SignatureReason.FORMAT, "not an ssh-ed25519 public key")
    return raw


def fingerprint(blob: bytes) -> str:
    """A public key blob's fingerprint as ``ssh-keygen -l`` prints it (SHA256:...)."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


# --- keys -------------------------------------------------------------------------


def _private_key_bytes(path: str) -> bytes:
    """The bytes of a private key file that only its owner can read (ssh's rule)."""
    try:
        with open(path, "rb") as file:
            info = os.fstat(file.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise KeyFileError(path, "is not a regular file: point coreweave_publish_key at the private key file")
            mode = stat.S_IMODE(info.st_mode)
            # ssh refuses its own key readable by others; we also refuse a world-readable one of any owner.
            if (info.st_uid == os.getuid() and mode & 0o077) or mode & 0o007:
                raise KeyFileError(
                    path,
                    f"permissions {mode:04o} are too open (the private key is readable by others): chmod 600 {path}",
                )
            data = file.read(_MAX_KEY_FILE + 1)
    except FileNotFoundError:
        raise KeyFileError(path, f"does not exist: create it with ssh-keygen -t ed25519 -N '' -f {path}") from None
    except OSError as error:  # the message names the file only: never its content
        raise KeyFileError(path, f"cannot be read ({type(error).__name__}): check its owner and mode") from None
    if len(data) > _MAX_KEY_FILE:
        raise KeyFileError(path, "is too large to be an OpenSSH private key")
    return data


def load_private_key(path: str) -> Ed25519PrivateKey:
    """The unencrypted ed25519 key in an OpenSSH private key file (``ssh-keygen -t ed25519 -N ''``).

    :raises KeyFileError: missing, unreadable, readable by others, encrypted, not an
        OpenSSH private key, or not ed25519.
    """
    data = _private_key_bytes(path)
    try:
        key = load_ssh_private_key(data, password=None)
    except TypeError:  # cryptography: "Password was not given but private key is encrypted"
        raise KeyFileError(
            path,
            "is protected by a passphrase, which an unattended publisher cannot type: "
            f"use a key without one (ssh-keygen -t ed25519 -N '' -f {path}), readable only by the publisher",
        ) from None
    except (ValueError, UnsupportedAlgorithm):  # their messages are dropped: they could quote the file
        raise KeyFileError(
            path, f"is not an OpenSSH private key: create one with ssh-keygen -t ed25519 -N '' -f {path}"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(path, f"is not an ed25519 key: create one with ssh-keygen -t ed25519 -N '' -f {path}")
    return key


def public_key_line(private_key: Ed25519PrivateKey) -> str:
    """The ``ssh-ed25519 AAAA...`` line of the key's public half (a .pub line without comment)."""
    return private_key.public_key().public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).decode("ascii")


def _public_key_blob(line: str, number: int, path: str) -> bytes:
    """The wire blob of one ``ssh-ed25519 AAAA... [comment]`` line."""
    fields = line.split(None, 2)
    key_type = fields[0]
    if key_type != KEY_TYPE:
        # Only a key type's name is quoted: the file may be the wrong one (a token file).
        known = key_type.startswith(("ssh-", "ecdsa-", "sk-")) and _KEY_LINE_TYPE.fullmatch(key_type)
        shown = repr(key_type) if known else "something else"
        raise KeyFileError(
            path, f"line {number}: starts with {shown}, not {KEY_TYPE}: only ed25519 public keys (.pub lines) work"
        )
    try:
        blob = base64.b64decode(fields[1] if len(fields) > 1 else "", validate=True)
        Ed25519PublicKey.from_public_bytes(_ed25519_raw(blob))
    except (ValueError, SignatureError):  # binascii.Error is a ValueError
        raise KeyFileError(
            path, f"line {number}: not a valid {KEY_TYPE} key: copy the publisher's .pub line unchanged"
        ) from None
    return blob


def read_public_keys(text: str, *, path: str = "") -> Tuple[bytes, ...]:
    """The wire blobs of the ``ssh-ed25519 AAAA... [comment]`` lines of ``text``
    (a .pub file, or several: one trusted key per line, for key rotation), in
    order, repeats dropped. Blank and ``#`` lines are skipped; ``path`` names
    the text in errors.

    :raises KeyFileError: any other line, or no key at all.
    """
    blobs: Dict[bytes, None] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if line and not line.startswith("#"):
            blobs.setdefault(_public_key_blob(line, number, path))
    if not blobs:
        raise KeyFileError(path, f"holds no {KEY_TYPE} public key: put the publisher's .pub line in it")
    return tuple(blobs)


# --- signatures ----------------------------------------------------------------------


def _signed_data(namespace: bytes, hash_algorithm: bytes, message: bytes) -> bytes:
    """What the key signs (PROTOCOL.sshsig §3); reserved is empty, as ssh-keygen verifies it."""
    digest = hashlib.new(hash_algorithm.decode("ascii"), message).digest()
    return _MAGIC + _string(namespace) + _string(b"") + _string(hash_algorithm) + _string(digest)


def _armor(blob: bytes) -> bytes:
    text = base64.b64encode(blob)
    lines = [text[start : start + _WRAP] for start in range(0, len(text), _WRAP)]
    return b"\n".join([_BEGIN, *lines, _END]) + b"\n"


def sign(message: bytes, private_key: Ed25519PrivateKey, namespace: str = NAMESPACE) -> bytes:
    """The armored SSHSIG signature of ``message``, byte for byte what
    ``ssh-keygen -Y sign -f KEY -n NAMESPACE`` writes (ed25519 is deterministic)."""
    if not namespace:
        raise ValueError("an SSHSIG namespace must not be empty (PROTOCOL.sshsig §2)")
    space, hash_algorithm = namespace.encode("utf-8"), HASH.encode("ascii")
    raw_public = private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    signature = private_key.sign(_signed_data(space, hash_algorithm, message))
    blob = b"".join((
        _MAGIC,
        struct.pack(">I", _VERSION),
        _string(_ed25519_blob(raw_public)),
        _string(space),
        _string(b""),
        _string(hash_algorithm),
        _string(_string(KEY_TYPE.encode()) + _string(signature)),
    ))
    return _armor(blob)


def _dearmor(armored: bytes) -> bytes:
    """The blob between the armor lines: BEGIN first, END last (one final newline
    allowed), base64 lines between, nothing else."""
    if len(armored) > _MAX_ARMORED:
        raise SignatureError(SignatureReason.ARMOR, f"more than {_MAX_ARMORED} bytes")
    lines = armored.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    if len(lines) < 3 or lines[0] != _BEGIN or lines[-1] != _END:
        raise SignatureError(SignatureReason.ARMOR, "no BEGIN/END SSH SIGNATURE lines around it")
    body = lines[1:-1]
    if not all(_ARMOR_LINE.fullmatch(line) for line in body):
        raise SignatureError(SignatureReason.ARMOR, "a line between BEGIN and END is not base64")
    try:
        return base64.b64decode(b"".join(body), validate=True)
    except ValueError:  # binascii.Error: bad padding, a truncated line
        raise SignatureError(SignatureReason.ARMOR, "the base64 between BEGIN and END is incomplete") from None


@dataclass(frozen=True)
class _Blob:
    """The fields of an SSHSIG blob of version 1 (reserved is read and ignored, as the spec says)."""

    publickey: bytes
    namespace: bytes
    hash_algorithm: bytes
    signature: bytes


def _parse(blob: bytes) -> _Blob:
    if not blob.startswith(_MAGIC):
        raise SignatureError(SignatureReason.FORMAT, "no SSHSIG preamble")
    if len(blob) < len(_MAGIC) + 4:
        raise SignatureError(SignatureReason.FORMAT, "truncated")
    (version,) = struct.unpack_from(">I", blob, len(_MAGIC))
    if version != _VERSION:
        raise SignatureError(SignatureReason.VERSION, f"version {version}")
    publickey, namespace, _reserved, hash_algorithm, signature = _take_strings(blob, len(_MAGIC) + 4, 5)
    return _Blob(publickey, namespace, hash_algorithm, signature)


def _shown(value: bytes) -> str:
    """Untrusted bytes, quoted and bounded for a message."""
    text = value.decode("utf-8", "replace")
    return repr(text if len(text) <= 64 else text[:64] + "...")


def _check_use(blob: _Blob, namespace: str) -> None:
    """The namespace, the hash and the key type of a parsed blob."""
    if blob.namespace != namespace.encode("utf-8"):
        raise SignatureError(SignatureReason.NAMESPACE, f"namespace {_shown(blob.namespace)}, expected {namespace!r}")
    if blob.hash_algorithm.decode("ascii", "replace") not in _HASHES:
        raise SignatureError(SignatureReason.HASH, f"hash {_shown(blob.hash_algorithm)}")
    key_type, _ = _take_string(blob.publickey, 0)
    if key_type != KEY_TYPE.encode():
        raise SignatureError(SignatureReason.KEY_TYPE, f"signed by a {_shown(key_type)} key")


def _ed25519_signature(signature: bytes) -> bytes:
    """The 64 signature bytes of an SSH ssh-ed25519 signature blob."""
    sig_type, raw = _take_strings(signature, 0, 2)
    if sig_type != KEY_TYPE.encode():
        raise SignatureError(SignatureReason.KEY_TYPE, f"a {_shown(sig_type)} signature")
    if len(raw) != _ED25519_SIGNATURE_BYTES:
        raise SignatureError(SignatureReason.FORMAT, f"an ed25519 signature of {len(raw)} bytes")
    return raw


def verify(message: bytes, armored: bytes, trusted: Sequence[bytes], namespace: str = NAMESPACE) -> bytes:
    """Check that one of the ``trusted`` public key blobs (from read_public_keys)
    signed ``message`` in ``namespace``; return that blob.

    Strict: the armor and nothing else, magic, version 1, the exact namespace,
    sha512 or sha256, ssh-ed25519 key and signature, the signature's public key
    byte-equal to a trusted one, no trailing bytes anywhere.

    :raises SignatureError: with the reason.
    """
    blob = _parse(_dearmor(armored))
    _check_use(blob, namespace)
    if blob.publickey not in trusted:
        raise SignatureError(SignatureReason.UNTRUSTED_KEY, f"signed by {fingerprint(blob.publickey)}")
    raw_signature = _ed25519_signature(blob.signature)
    key = Ed25519PublicKey.from_public_bytes(_ed25519_raw(blob.publickey))
    try:
        key.verify(raw_signature, _signed_data(blob.namespace, blob.hash_algorithm, message))
    except InvalidSignature:
        raise SignatureError(
            SignatureReason.BAD_SIGNATURE, f"{fingerprint(blob.publickey)} did not sign these bytes"
        ) from None
    return blob.publickey
