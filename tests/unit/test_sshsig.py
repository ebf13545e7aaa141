"""sshsig: OpenSSH SSHSIG signatures (PROTOCOL.sshsig), ed25519 only, checked
against the real ssh-keygen both ways. Keys are made per test with
``ssh-keygen -t ed25519 -N ''`` in tmp_path.

Our signature is what ``ssh-keygen -Y sign -n nsscache-coreweave`` writes, byte
for byte, and ``ssh-keygen -Y verify`` accepts it; verify accepts what
ssh-keygen signs with a trusted key in our namespace and refuses anything else
with a reason; key files are refused when unusable, never quoting key material.
"""

from __future__ import annotations

import base64
import os
import struct
import subprocess
import traceback
from pathlib import Path
from typing import List, Tuple

import pytest

from nss_cache_coreweave.sshsig import (
    NAMESPACE,
    KeyFileError,
    SignatureError,
    SignatureReason,
    fingerprint,
    load_private_key,
    public_key_line,
    read_public_keys,
    sign,
    verify,
)

SSH_KEYGEN = "/usr/bin/ssh-keygen"
MESSAGE = b'{"format": "nsscache-coreweave-bundle/1", "generation": 1764745200}\n'


# --- helpers: the real ssh-keygen, and the SSHSIG blob taken apart -------------------


def keygen(directory: Path, name: str, kind: str = "ed25519", passphrase: str = "") -> Path:
    """A new private key file (0600) and its .pub beside it."""
    path = directory / name
    bits = ["-b", "2048"] if kind == "rsa" else []
    subprocess.run(
        [SSH_KEYGEN, "-q", "-t", kind, *bits, "-N", passphrase, "-C", f"{name}@test", "-f", str(path)], check=True
    )
    return path


def keygen_sign(key: Path, message: bytes, namespace: str = NAMESPACE, *options: str) -> bytes:
    """``ssh-keygen -Y sign`` of ``message`` on stdin: the armored signature it writes."""
    result = subprocess.run(
        [SSH_KEYGEN, "-Y", "sign", "-f", str(key), "-n", namespace, *options],
        input=message, capture_output=True, check=True,
    )
    return result.stdout


def keygen_check(tmp_path: Path, pub: Path, message: bytes, armored: bytes, mode: str) -> subprocess.CompletedProcess:
    """``ssh-keygen -Y verify`` (with an allowed_signers file naming ``publisher``)
    or ``-Y check-novalidate`` of ``armored`` over ``message``."""
    signature = tmp_path / "message.sig"
    signature.write_bytes(armored)
    if mode == "verify":
        allowed = tmp_path / "allowed_signers"
        allowed.write_text(f'publisher namespaces="{NAMESPACE}" {public_key_text(pub)}\n')
        command = ["-Y", "verify", "-f", str(allowed), "-I", "publisher"]
    else:
        command = ["-Y", "check-novalidate"]
    return subprocess.run(
        [SSH_KEYGEN, *command, "-n", NAMESPACE, "-s", str(signature)], input=message, capture_output=True
    )


def public_key_text(key: Path) -> str:
    """``ssh-ed25519 AAAA...`` of a key's .pub file, without its comment."""
    return " ".join(Path(f"{key}.pub").read_text().split()[:2])


def base64_of(key: Path) -> List[str]:
    """The base64 of a key: the lines of its private file and the body of its .pub."""
    lines = [line for line in key.read_text().splitlines() if line and not line.startswith("-----")]
    return lines + [Path(f"{key}.pub").read_text().split()[1]]


def string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def blob_of(armored: bytes) -> bytes:
    return base64.b64decode(b"".join(armored.splitlines()[1:-1]))


def armor(blob: bytes) -> bytes:
    text = base64.b64encode(blob)
    return b"\n".join([b"-----BEGIN SSH SIGNATURE-----", *[text[i : i + 70] for i in range(0, len(text), 70)],
                       b"-----END SSH SIGNATURE-----"]) + b"\n"


def fields_of(armored: bytes) -> Tuple[int, List[bytes]]:
    """The version and the five strings of a signature (publickey, namespace,
    reserved, hash_algorithm, signature)."""
    blob = blob_of(armored)
    assert blob[:6] == b"SSHSIG"
    (version,) = struct.unpack_from(">I", blob, 6)
    fields, offset = [], 10
    while offset < len(blob):
        (length,) = struct.unpack_from(">I", blob, offset)
        fields.append(blob[offset + 4 : offset + 4 + length])
        offset += 4 + length
    assert len(fields) == 5
    return version, fields


def rebuilt(armored: bytes, version: int = 1, **changes: bytes) -> bytes:
    """``armored`` with some fields replaced, armored again."""
    old_version, fields = fields_of(armored)
    names = ["publickey", "namespace", "reserved", "hash_algorithm", "signature"]
    fields = [changes.get(name, field) for name, field in zip(names, fields)]
    return armor(b"SSHSIG" + struct.pack(">I", version) + b"".join(string(field) for field in fields))


@pytest.fixture
def publisher(tmp_path) -> Path:
    return keygen(tmp_path, "publisher")


@pytest.fixture
def trusted(publisher) -> Tuple[bytes, ...]:
    return read_public_keys(Path(f"{publisher}.pub").read_text())


# --- interoperability with ssh-keygen ---------------------------------------------


@pytest.mark.parametrize("mode", ["verify", "check-novalidate"])
def test_ssh_keygen_accepts_our_signature(tmp_path, publisher, mode):
    result = keygen_check(tmp_path, publisher, MESSAGE, sign(MESSAGE, load_private_key(str(publisher))), mode)
    assert result.returncode == 0, result.stderr
    assert b"Good" in result.stdout + result.stderr


def test_ssh_keygen_refuses_our_signature_over_other_bytes(tmp_path, publisher):
    armored = sign(MESSAGE, load_private_key(str(publisher)))
    assert keygen_check(tmp_path, publisher, MESSAGE + b" ", armored, "verify").returncode != 0


@pytest.mark.parametrize(
    "message",
    [pytest.param(b"", id="empty"), pytest.param(MESSAGE, id="manifest"),
     pytest.param(bytes(range(256)) * 4096, id="binary-1MiB")],
)
def test_our_signature_is_byte_identical_to_ssh_keygens(publisher, message):
    """ed25519 is deterministic and both hash with sha512: one key, one message, one signature."""
    ours = sign(message, load_private_key(str(publisher)))
    assert ours == keygen_sign(publisher, message)
    assert ours.startswith(b"-----BEGIN SSH SIGNATURE-----\n")
    assert ours.endswith(b"\n-----END SSH SIGNATURE-----\n")
    assert [len(line) for line in ours.splitlines()[1:-1]] == [70, 70, 70, 42]


def test_ssh_keygen_signature_verifies_and_names_the_signing_key(publisher, trusted):
    assert verify(MESSAGE, keygen_sign(publisher, MESSAGE), trusted) == trusted[0]


def test_a_sha256_signature_by_ssh_keygen_is_accepted(publisher, trusted):
    armored = keygen_sign(publisher, MESSAGE, NAMESPACE, "-O", "hashalg=sha256")
    assert fields_of(armored)[1][3] == b"sha256"
    assert verify(MESSAGE, armored, trusted) == trusted[0]


def test_the_reserved_field_is_ignored_like_ssh_keygen_does(tmp_path, publisher, trusted):
    """PROTOCOL.sshsig: implementations should ignore a non-empty reserved value;
    ssh-keygen verifies as if it were empty, and so do we."""
    armored = rebuilt(keygen_sign(publisher, MESSAGE), reserved=b"tags")
    assert keygen_check(tmp_path, publisher, MESSAGE, armored, "verify").returncode == 0
    assert verify(MESSAGE, armored, trusted) == trusted[0]


def test_either_rotated_key_is_trusted_and_verify_says_which_signed(tmp_path):
    old, new = keygen(tmp_path, "old"), keygen(tmp_path, "new")
    trusted = read_public_keys(Path(f"{old}.pub").read_text() + Path(f"{new}.pub").read_text())
    assert len(trusted) == 2
    assert verify(MESSAGE, keygen_sign(old, MESSAGE), trusted) == trusted[0]
    assert verify(MESSAGE, sign(MESSAGE, load_private_key(str(new))), trusted) == trusted[1]


def test_public_key_line_is_the_pub_file_without_comment(publisher):
    assert public_key_line(load_private_key(str(publisher))) == public_key_text(publisher)


def test_fingerprint_is_ssh_keygens(publisher, trusted):
    listed = subprocess.run([SSH_KEYGEN, "-lf", f"{publisher}.pub"], capture_output=True, text=True, check=True)
    assert fingerprint(trusted[0]) == listed.stdout.split()[1]


def test_an_empty_namespace_is_not_signed(publisher):
    with pytest.raises(ValueError):
        sign(MESSAGE, load_private_key(str(publisher)), namespace="")


# --- refusals ------------------------------------------------------------------------


def test_one_changed_byte_of_the_message_is_refused(publisher, trusted):
    armored = keygen_sign(publisher, MESSAGE)
    changed = bytearray(MESSAGE)
    changed[20] ^= 0x01
    with pytest.raises(SignatureError) as refused:
        verify(bytes(changed), armored, trusted)
    assert refused.value.reason is SignatureReason.BAD_SIGNATURE
    assert str(refused.value) == (
        f"refusing the SSH signature: bad_signature ({fingerprint(trusted[0])} did not sign these bytes): "
        "the signed bytes were changed after signing, or damaged in transit; do not use them, publish again"
    )


def test_a_signature_by_another_key_is_refused_naming_its_fingerprint(tmp_path, trusted):
    other = keygen(tmp_path, "other")
    armored = keygen_sign(other, MESSAGE)
    with pytest.raises(SignatureError) as refused:
        verify(MESSAGE, armored, trusted)
    assert refused.value.reason is SignatureReason.UNTRUSTED_KEY
    other_blob = read_public_keys(Path(f"{other}.pub").read_text())[0]
    assert refused.value.detail == f"signed by {fingerprint(other_blob)}"
    assert "add its new .pub line to the trusted keys file" in str(refused.value)


def test_no_trusted_key_trusts_nothing(publisher):
    with pytest.raises(SignatureError) as refused:
        verify(MESSAGE, keygen_sign(publisher, MESSAGE), ())
    assert refused.value.reason is SignatureReason.UNTRUSTED_KEY


def test_a_signature_in_another_namespace_is_refused(publisher, trusted):
    with pytest.raises(SignatureError) as refused:
        verify(MESSAGE, keygen_sign(publisher, MESSAGE, "file"), trusted)
    assert refused.value.reason is SignatureReason.NAMESPACE
    assert refused.value.detail == "namespace 'file', expected 'nsscache-coreweave'"
    assert "ssh-keygen -Y sign -n nsscache-coreweave" in str(refused.value)


def test_our_namespace_is_required_even_when_asked_for_another(publisher, trusted):
    armored = sign(MESSAGE, load_private_key(str(publisher)), namespace="file")
    assert verify(MESSAGE, armored, trusted, namespace="file") == trusted[0]
    with pytest.raises(SignatureError) as refused:
        verify(MESSAGE, armored, trusted)
    assert refused.value.reason is SignatureReason.NAMESPACE


def test_an_rsa_signature_is_refused_for_its_key_type(tmp_path, trusted):
    rsa = keygen(tmp_path, "rsa", kind="rsa")
    with pytest.raises(SignatureError) as refused:
        verify(MESSAGE, keygen_sign(rsa, MESSAGE), trusted)
    assert refused.value.reason is SignatureReason.KEY_TYPE
    assert refused.value.detail == "signed by a 'ssh-rsa' key"


def _cut_in_half(armored: bytes) -> bytes:
    return armored[: len(armored) // 2]


def _last_base64_line_dropped(armored: bytes) -> bytes:
    lines = armored.splitlines(keepends=True)
    return b"".join(lines[:-2] + lines[-1:])


ARMOR_REFUSALS = {
    "empty": lambda armored: b"",
    "cut-in-half": _cut_in_half,
    "last-base64-line-dropped": _last_base64_line_dropped,
    "not-armored": blob_of,
    "base64-without-armor": lambda armored: b"".join(armored.splitlines()[1:-1]),
    "trailing-garbage": lambda armored: armored + b"garbage\n",
    "second-signature-after-it": lambda armored: armored + armored,
    "text-before-it": lambda armored: b"signature:\n" + armored,
    "pgp-armor": lambda armored: armored.replace(b"SSH SIGNATURE", b"PGP SIGNATURE"),
    "space-in-base64": lambda armored: armored.replace(b"AAAA", b"AA AA", 1),
    "huge": lambda armored: armored[:-29] + b"QUFB\n" * 20000 + armored[-29:],
}


@pytest.mark.parametrize("damage", sorted(ARMOR_REFUSALS))
def test_a_damaged_armor_is_refused(publisher, trusted, damage):
    with pytest.raises(SignatureError) as refused:
        verify(MESSAGE, ARMOR_REFUSALS[damage](keygen_sign(publisher, MESSAGE)), trusted)
    assert refused.value.reason is SignatureReason.ARMOR


def test_the_armor_without_its_final_newline_is_accepted(publisher, trusted):
    assert verify(MESSAGE, keygen_sign(publisher, MESSAGE).rstrip(b"\n"), trusted) == trusted[0]


def _signature_byte_flipped(armored: bytes) -> bytes:
    signature = bytearray(fields_of(armored)[1][4])
    signature[-1] ^= 0x01
    return rebuilt(armored, signature=bytes(signature))


BLOB_REFUSALS = {
    "truncated-blob": (lambda armored: armor(blob_of(armored)[:-8]), SignatureReason.FORMAT),
    "trailing-bytes-in-blob": (lambda armored: armor(blob_of(armored) + b"\0"), SignatureReason.FORMAT),
    "other-magic": (lambda armored: armor(b"SSHSIH" + blob_of(armored)[6:]), SignatureReason.FORMAT),
    "magic-only": (lambda armored: armor(b"SSHSIG"), SignatureReason.FORMAT),
    "version-0": (lambda armored: rebuilt(armored, version=0), SignatureReason.VERSION),
    "version-2": (lambda armored: rebuilt(armored, version=2), SignatureReason.VERSION),
    "hash-md5": (lambda armored: rebuilt(armored, hash_algorithm=b"md5"), SignatureReason.HASH),
    "hash-empty": (lambda armored: rebuilt(armored, hash_algorithm=b""), SignatureReason.HASH),
    "rsa-signature-type": (
        lambda armored: rebuilt(armored, signature=string(b"rsa-sha2-512") + string(bytes(64))),
        SignatureReason.KEY_TYPE,
    ),
    "short-signature": (
        lambda armored: rebuilt(armored, signature=string(b"ssh-ed25519") + string(bytes(63))),
        SignatureReason.FORMAT,
    ),
    "trailing-bytes-in-signature": (
        lambda armored: rebuilt(armored, signature=fields_of(armored)[1][4] + b"\0"),
        SignatureReason.FORMAT,
    ),
    "trailing-bytes-in-publickey": (
        lambda armored: rebuilt(armored, publickey=fields_of(armored)[1][0] + b"\0"),
        SignatureReason.UNTRUSTED_KEY,
    ),
    "signature-byte-flipped": (_signature_byte_flipped, SignatureReason.BAD_SIGNATURE),
}


@pytest.mark.parametrize("damage", sorted(BLOB_REFUSALS))
def test_a_damaged_signature_blob_is_refused(publisher, trusted, damage):
    make, reason = BLOB_REFUSALS[damage]
    with pytest.raises(SignatureError) as refused:
        verify(MESSAGE, make(keygen_sign(publisher, MESSAGE)), trusted)
    assert refused.value.reason is reason
    assert str(refused.value).startswith(f"refusing the SSH signature: {reason.value}")


def test_ssh_keygen_also_refuses_version_2(tmp_path, publisher):
    armored = rebuilt(keygen_sign(publisher, MESSAGE), version=2)
    assert keygen_check(tmp_path, publisher, MESSAGE, armored, "verify").returncode != 0


def test_signature_reasons_are_the_designed_ones():
    assert [reason.value for reason in SignatureReason] == [
        "armor", "format", "version", "namespace", "hash", "key_type", "untrusted_key", "bad_signature",
    ]


# --- read_public_keys --------------------------------------------------------------


def test_two_keys_in_one_file_are_both_trusted_in_order(tmp_path):
    old, new = keygen(tmp_path, "old"), keygen(tmp_path, "new")
    text = (
        "# publisher keys, the new one first during the rotation\n"
        "\n"
        f"  {Path(f'{new}.pub').read_text().strip()}  \n"
        "   # the old key, until every publisher signs with the new one\n"
        f"{public_key_text(old)}\n"
        "\n"
    )
    blobs = read_public_keys(text, path="/etc/nsscache-coreweave/publisher.pub")
    assert blobs == (
        base64.b64decode(public_key_text(new).split()[1]),
        base64.b64decode(public_key_text(old).split()[1]),
    )


def test_a_key_listed_twice_is_one_trusted_key(publisher):
    line = Path(f"{publisher}.pub").read_text()
    assert read_public_keys(line + line) == read_public_keys(line)


def test_an_rsa_line_is_refused(tmp_path, publisher):
    rsa = keygen(tmp_path, "rsa", kind="rsa")
    text = Path(f"{publisher}.pub").read_text() + Path(f"{rsa}.pub").read_text()
    with pytest.raises(KeyFileError) as refused:
        read_public_keys(text, path="/etc/publisher.pub")
    assert refused.value.path == "/etc/publisher.pub"
    assert refused.value.reason == (
        "line 2: starts with 'ssh-rsa', not ssh-ed25519: only ed25519 public keys (.pub lines) work"
    )
    assert str(refused.value) == f"/etc/publisher.pub: {refused.value.reason}"
    assert public_key_text(rsa).split()[1] not in str(refused.value)


def _rsa_body_under_ed25519_name(tmp_path: Path) -> str:
    rsa = keygen(tmp_path, "rsa", kind="rsa")
    return f"ssh-ed25519 {public_key_text(rsa).split()[1]}"


GARBAGE = {
    "prose": (lambda tmp_path, ed: "this is not a key", "line 1: starts with something else, not ssh-ed25519"),
    "binary": (lambda tmp_path, ed: "\x00\x01\x02 x", "line 1: starts with something else, not ssh-ed25519"),
    "type-only": (lambda tmp_path, ed: "ssh-ed25519", "line 1: not a valid ssh-ed25519 key"),
    "bad-base64": (lambda tmp_path, ed: "ssh-ed25519 AAAA!!!!", "line 1: not a valid ssh-ed25519 key"),
    "cut-body": (lambda tmp_path, ed: ed[:-8], "line 1: not a valid ssh-ed25519 key"),
    "rsa-body": (lambda tmp_path, ed: _rsa_body_under_ed25519_name(tmp_path), "line 1: not a valid ssh-ed25519 key"),
    "allowed-signers-line": (
        lambda tmp_path, ed: f'publisher namespaces="{NAMESPACE}" {ed}', "line 1: starts with something else",
    ),
    "options-before-key": (lambda tmp_path, ed: f"restrict {ed}", "line 1: starts with something else"),
    "garbage-after-a-good-line": (lambda tmp_path, ed: f"{ed}\n\n%%%", "line 3: starts with something else"),
    "nothing": (lambda tmp_path, ed: "", "holds no ssh-ed25519 public key"),
    "comments-only": (lambda tmp_path, ed: "# nothing yet\n\n", "holds no ssh-ed25519 public key"),
}


@pytest.mark.parametrize("kind", sorted(GARBAGE))
def test_garbage_is_refused(tmp_path, publisher, kind):
    make, reason = GARBAGE[kind]
    with pytest.raises(KeyFileError) as refused:
        read_public_keys(make(tmp_path, public_key_text(publisher)))
    assert refused.value.reason.startswith(reason)
    assert refused.value.path == ""
    assert str(refused.value).startswith(f"public keys: {reason}")


# --- load_private_key -----------------------------------------------------------------


def assert_quotes_no_key(error: KeyFileError, key: Path) -> None:
    """Neither the message nor the logged traceback (with any chained error) holds the key."""
    logged = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    for text in (str(error), repr(error), logged):
        assert all(chunk not in text for chunk in base64_of(key))
    assert "During handling" not in logged and "direct cause" not in logged


def test_an_unencrypted_ed25519_key_file_loads(publisher):
    assert os.stat(publisher).st_mode & 0o777 == 0o600
    key = load_private_key(str(publisher))
    assert verify(MESSAGE, sign(MESSAGE, key), read_public_keys(Path(f"{publisher}.pub").read_text()))


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_a_key_file_readable_by_others_is_refused(publisher, mode):
    os.chmod(publisher, mode)
    with pytest.raises(KeyFileError) as refused:
        load_private_key(str(publisher))
    assert refused.value.path == str(publisher)
    assert refused.value.reason == (
        f"permissions {mode:04o} are too open (the private key is readable by others): chmod 600 {publisher}"
    )
    assert_quotes_no_key(refused.value, publisher)


def test_a_read_only_key_file_is_fine(publisher):
    os.chmod(publisher, 0o400)
    assert public_key_line(load_private_key(str(publisher))) == public_key_text(publisher)


def test_a_passphrase_protected_key_is_refused(tmp_path):
    key = keygen(tmp_path, "protected", passphrase="correct horse battery staple")
    with pytest.raises(KeyFileError) as refused:
        load_private_key(str(key))
    assert refused.value.reason.startswith("is protected by a passphrase, which an unattended publisher cannot type")
    assert f"ssh-keygen -t ed25519 -N '' -f {key}" in refused.value.reason
    assert "correct horse" not in str(refused.value)
    assert_quotes_no_key(refused.value, key)


def test_a_missing_key_file_is_refused(tmp_path):
    path = tmp_path / "absent"
    with pytest.raises(KeyFileError) as refused:
        load_private_key(str(path))
    assert str(refused.value) == f"{path}: does not exist: create it with ssh-keygen -t ed25519 -N '' -f {path}"


def test_an_rsa_key_file_is_refused(tmp_path):
    key = keygen(tmp_path, "rsa", kind="rsa")
    with pytest.raises(KeyFileError) as refused:
        load_private_key(str(key))
    assert refused.value.reason == f"is not an ed25519 key: create one with ssh-keygen -t ed25519 -N '' -f {key}"
    assert_quotes_no_key(refused.value, key)


def test_a_public_key_given_as_the_private_key_is_refused(publisher):
    pub = Path(f"{publisher}.pub")
    os.chmod(pub, 0o600)
    with pytest.raises(KeyFileError) as refused:
        load_private_key(str(pub))
    assert refused.value.reason.startswith("is not an OpenSSH private key")
    assert_quotes_no_key(refused.value, publisher)


def test_a_damaged_key_file_is_refused_without_quoting_it(publisher):
    lines = publisher.read_text().splitlines(keepends=True)
    publisher.write_text("".join(lines[:2] + lines[3:]))
    with pytest.raises(KeyFileError) as refused:
        load_private_key(str(publisher))
    assert refused.value.reason.startswith("is not an OpenSSH private key")
    assert_quotes_no_key(refused.value, publisher)


def test_a_directory_is_not_a_key_file(tmp_path):
    directory = tmp_path / "keys"
    directory.mkdir(mode=0o700)
    with pytest.raises(KeyFileError) as refused:
        load_private_key(str(directory))
    assert refused.value.reason == "cannot be read (IsADirectoryError): check its owner and mode"


def test_key_file_errors_are_value_errors_with_fields():
    error = KeyFileError("/etc/key", "is missing")
    assert isinstance(error, ValueError)
    assert (error.path, error.reason, str(error)) == ("/etc/key", "is missing", "/etc/key: is missing")
    assert isinstance(SignatureError(SignatureReason.ARMOR), ValueError)


def test_a_token_file_named_as_the_public_key_is_never_quoted():
    with pytest.raises(KeyFileError) as refused:
        read_public_keys("cwT0ken-secret-value\n", path="/etc/nsscache-coreweave/token")

    assert "cwT0ken" not in str(refused.value)
    assert refused.value.reason.startswith("line 1: starts with something else, not ssh-ed25519")
