"""sshkeys.normalise: a key reaches sshkey.cache only as ``type base64[ comment]``
on one line, of an allowed type, whose body decodes to that same type, RSA of
at least 2048 bits. Keys are generated per run (support.keys); the FIDO keys are
hand-built wire blobs.
"""

from __future__ import annotations

import pytest

from nss_cache_coreweave.sshkeys import DEFAULT_KEY_TYPES, InvalidKey, normalise
from support.keys import (
    body,
    dsa_key,
    ecdsa_key,
    ecdsa_key_naming_another_curve,
    ed25519_key,
    rsa_key,
    sk_ecdsa_key,
    sk_ed25519_key,
)

VALID = {
    "ed25519": lambda: ed25519_key(),
    "ecdsa-nistp256": lambda: ecdsa_key("nistp256"),
    "ecdsa-nistp384": lambda: ecdsa_key("nistp384"),
    "ecdsa-nistp521": lambda: ecdsa_key("nistp521"),
    "sk-ed25519": sk_ed25519_key,
    "sk-ecdsa": sk_ecdsa_key,
    "rsa-2048": lambda: rsa_key(2048),
    "rsa-3072": lambda: rsa_key(3072),
}


@pytest.mark.parametrize("kind", sorted(VALID))
def test_valid_key_is_kept_as_is(kind):
    key = VALID[kind]()
    assert normalise(key) == key
    assert normalise(f"{key} alice@laptop") == f"{key} alice@laptop"


def test_generated_keys_have_the_expected_types():
    assert [VALID[k]().split()[0] for k in sorted(VALID)] == [
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "ssh-ed25519",
        "ssh-rsa",
        "ssh-rsa",
        "sk-ecdsa-sha2-nistp256@openssh.com",
        "sk-ssh-ed25519@openssh.com",
    ]


@pytest.mark.parametrize(
    "template, expected",
    [
        pytest.param("  {key}  ", "{key}", id="surrounding-spaces"),
        pytest.param("{type}\t{body}\talice@laptop", "{key} alice@laptop", id="tabs-between-fields"),
        pytest.param("{type}   {body}   alice  smith  ", "{key} alice  smith", id="comment-inner-spaces-kept"),
        pytest.param("{key} it's me, Alice (work)", "{key} it's me, Alice (work)", id="printable-punctuation-kept"),
    ],
)
def test_fields_are_rejoined_with_single_spaces(template, expected):
    key = ed25519_key()
    fields = dict(key=key, type="ssh-ed25519", body=body(key))
    assert normalise(template.format(**fields)) == expected.format(**fields)


@pytest.mark.parametrize(
    "comment",
    [
        pytest.param("alice\x1b[31m@laptop", id="escape-sequence"),
        pytest.param("bell\x07", id="bell"),
        pytest.param("del\x7f", id="del"),
        pytest.param("josé@portátil", id="non-ascii"),
        pytest.param("tab\tinside", id="tab-inside"),
        pytest.param("\u202eevil", id="bidi-override"),
    ],
)
def test_non_printable_comment_is_dropped_but_key_kept(comment):
    key = ed25519_key()
    assert normalise(f"{key} {comment}") == key


def _mismatch(outer, inner_key):
    return f"{outer} {body(inner_key)}"


@pytest.mark.parametrize(
    "make_line, reason",
    [
        pytest.param(lambda: rsa_key(1024), "is a 1024-bit RSA key, below the 2048-bit minimum", id="rsa-1024"),
        pytest.param(lambda: dsa_key(), "is a DSA key, which is not accepted", id="ssh-dss"),
        pytest.param(
            lambda: f'command="/bin/sh" {ed25519_key()}',
            "has unknown type 'command=\"/bin/sh\"' or authorized_keys options, "
            "which are not accepted (coreweave_allow_key_options)",
            id="options-command",
        ),
        pytest.param(
            lambda: f"restrict,pty {ed25519_key()}",
            "has unknown type 'restrict,pty' or authorized_keys options, "
            "which are not accepted (coreweave_allow_key_options)",
            id="options-restrict",
        ),
        pytest.param(
            lambda: f'from="10.0.0.0/8",no-agent-forwarding,permitopen="db:5432",environment="A=1" {ed25519_key()}',
            "has unknown type 'from=\"10.0.0.0/8\",no-agent-forwarding,pe' or authorized_keys options, "
            "which are not accepted (coreweave_allow_key_options)",
            id="options-long-cut-at-40",
        ),
        pytest.param(
            lambda: "ssh-foo AAAA",
            "has unknown type 'ssh-foo' or authorized_keys options, "
            "which are not accepted (coreweave_allow_key_options)",
            id="unknown-type",
        ),
        pytest.param(
            lambda: f"ssh-ed25519-cert-v01@openssh.com {body(ed25519_key())}",
            "has unknown type 'ssh-ed25519-cert-v01@openssh.com' or authorized_keys options, "
            "which are not accepted (coreweave_allow_key_options)",
            id="certificate",
        ),
        pytest.param(
            lambda: "SSH-ED25519 AAAA",
            "has unknown type 'SSH-ED25519' or authorized_keys options, "
            "which are not accepted (coreweave_allow_key_options)",
            id="type-case",
        ),
        pytest.param(lambda: "ssh-ed25519 !!not-base64!!", "has a body that is not base64", id="garbage-base64"),
        pytest.param(lambda: "ssh-ed25519 AAAA===", "has a body that is not base64", id="too-much-padding"),
        pytest.param(lambda: "ssh-ed25519 AA-_AA", "has a body that is not base64", id="urlsafe-alphabet"),
        pytest.param(lambda: "", "is not 'type base64 [comment]'", id="empty"),
        pytest.param(lambda: "   ", "is not 'type base64 [comment]'", id="blank"),
        pytest.param(lambda: "ssh-ed25519", "is not 'type base64 [comment]'", id="type-only"),
        pytest.param(lambda: f"{ed25519_key()}\n{ed25519_key('b')}", "contains a line break or NUL",
                     id="newline-inside"),
        pytest.param(lambda: f"{ed25519_key()} a\rb", "contains a line break or NUL", id="carriage-return"),
        pytest.param(lambda: f"{ed25519_key()}\n", "contains a line break or NUL", id="trailing-newline"),
        pytest.param(lambda: f"{ed25519_key()}\0", "contains a line break or NUL", id="nul"),
        pytest.param(lambda: "ssh-ed25519 " + "A" * 16384, "is longer than 16384 characters", id="too-long"),
        pytest.param(lambda: 5, "is a JSON int, not a string", id="number"),
        pytest.param(lambda: None, "is a JSON NoneType, not a string", id="null"),
        pytest.param(lambda: ["ssh-ed25519 AAAA"], "is a JSON list, not a string", id="list"),
        pytest.param(lambda: {"key": "ssh-ed25519 AAAA"}, "is a JSON dict, not a string", id="object"),
    ],
)
def test_hostile_key_is_refused_with_its_reason(make_line, reason):
    with pytest.raises(InvalidKey) as caught:
        normalise(make_line())
    assert str(caught.value) == reason


@pytest.mark.parametrize(
    "make_line, outer",
    [
        pytest.param(lambda: _mismatch("ssh-rsa", ed25519_key()), "ssh-rsa", id="rsa-claiming-ed25519-body"),
        pytest.param(lambda: _mismatch("ssh-ed25519", rsa_key(2048)), "ssh-ed25519", id="ed25519-claiming-rsa-body"),
        pytest.param(lambda: _mismatch("ecdsa-sha2-nistp256", ecdsa_key("nistp384")), "ecdsa-sha2-nistp256",
                     id="p256-claiming-p384-body"),
        pytest.param(lambda: _mismatch("sk-ssh-ed25519@openssh.com", ed25519_key()), "sk-ssh-ed25519@openssh.com",
                     id="sk-claiming-plain-body"),
        pytest.param(lambda: _mismatch("ssh-ed25519", sk_ed25519_key()), "ssh-ed25519", id="plain-claiming-sk-body"),
        pytest.param(lambda: _mismatch("ssh-rsa", dsa_key()), "ssh-rsa", id="rsa-claiming-dsa-body"),
        pytest.param(lambda: ecdsa_key_naming_another_curve("ecdsa-sha2-nistp256", "nistp384"), "ecdsa-sha2-nistp256",
                     id="p256-body-naming-the-p384-curve"),
        pytest.param(lambda: "ssh-ed25519 AAAA", "ssh-ed25519", id="valid-base64-not-a-key"),
        pytest.param(lambda: f"ssh-ed25519 {body(ed25519_key())[:-8]}", "ssh-ed25519", id="truncated-body"),
    ],
)
def test_body_that_does_not_decode_as_the_outer_type_is_refused(make_line, outer):
    with pytest.raises(InvalidKey) as caught:
        normalise(make_line())
    assert str(caught.value).startswith(f"does not decode as a {outer} key (")


def test_key_types_can_be_narrowed():
    assert normalise(ed25519_key(), allowed={"ed25519"}) == ed25519_key()
    with pytest.raises(InvalidKey) as caught:
        normalise(rsa_key(2048), allowed={"ed25519"})
    assert str(caught.value) == "has type ssh-rsa, which is not allowed here"


def test_rsa_minimum_can_be_raised():
    with pytest.raises(InvalidKey) as caught:
        normalise(rsa_key(2048), min_rsa_bits=3072)
    assert str(caught.value) == "is a 2048-bit RSA key, below the 3072-bit minimum"


def test_every_family_is_allowed_by_default():
    assert DEFAULT_KEY_TYPES == {"ed25519", "ecdsa", "sk-ed25519", "sk-ecdsa", "rsa"}


def test_invalid_key_is_a_value_error():
    assert issubclass(InvalidKey, ValueError)
