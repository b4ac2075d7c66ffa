"""SASL exchanges, bytes in and answers out: RFC test vectors, a real SCRAM client, bad input."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from standard_edition.core.credentials import (
    Credentials,
    check_password,
    derive,
    scram_keys,
)
from standard_edition.xmpp import sasl
from standard_edition.xmpp.sasl import (
    Challenge,
    ChannelBinding,
    Failure,
    Mechanism,
    Success,
    make_mechanism,
    offered_mechanisms,
)

DOMAIN = "example.test"
SECRET = b"decoy secret for tests"
CB = ChannelBinding({"tls-exporter": b"\x01" * 32, "tls-server-end-point": b"\x02" * 32})
NO_CB = ChannelBinding()
SCRAMS = ["SCRAM-SHA-256", "SCRAM-SHA-1", "SCRAM-SHA-256-PLUS", "SCRAM-SHA-1-PLUS"]
HASH = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-1": "sha1"}

ACCOUNTS: dict[str, tuple[Credentials, bool]] = {
    "alice": (derive("alice", DOMAIN, "secret"), True),
    "bob": (derive("bob", DOMAIN, "hunter2"), False),  # disabled
    "a,b=c": (derive("a,b=c", DOMAIN, "pw"), True),
}


def lookup(username: str) -> tuple[Credentials, bool] | None:
    return ACCOUNTS.get(username)


def mech(
    name: str,
    cb: ChannelBinding = CB,
    *,
    tls: bool = True,
    nonce: Callable[[], str] | None = None,
    accounts: Callable[[str], tuple[Credentials, bool] | None] = lookup,
    domain: str | None = None,
) -> Mechanism:
    m = make_mechanism(
        name,
        lookup=accounts,
        decoy_secret=SECRET,
        channel_binding=cb,
        tls=tls,
        nonce_factory=nonce,
        domain=domain,
    )
    assert m is not None
    return m


class ScramClient:
    """Just enough of an RFC 5802 client to drive the server."""

    def __init__(
        self,
        mechanism: str,
        user: str,
        password: str,
        *,
        gs2: str | None = None,
        cb_data: bytes = b"",
        nonce: str = "Cl1ent+n0nce",
    ) -> None:
        self.hash = HASH[mechanism.removesuffix("-PLUS")]
        self.password = password
        self.gs2 = (
            gs2 if gs2 is not None else ("p=tls-exporter,," if "PLUS" in mechanism else "n,,")
        )
        self.cb_data = cb_data
        self.nonce = nonce
        escaped = user.replace("=", "=3D").replace(",", "=2C")
        self.bare = f"n={escaped},r={nonce}"
        self.server_signature = b""

    def first(self) -> bytes:
        return (self.gs2 + self.bare).encode()

    def final(self, server_first: bytes, *, nonce: str | None = None) -> bytes:
        attrs = dict(a.split("=", 1) for a in server_first.decode().split(","))
        assert attrs["r"].startswith(self.nonce)
        salted = hashlib.pbkdf2_hmac(
            self.hash, self.password.encode(), base64.b64decode(attrs["s"]), int(attrs["i"])
        )
        client_key = hmac.digest(salted, b"Client Key", self.hash)
        stored_key = hashlib.new(self.hash, client_key).digest()
        cbind = base64.b64encode(self.gs2.encode() + self.cb_data).decode()
        without_proof = f"c={cbind},r={nonce or attrs['r']}"
        auth = f"{self.bare},{server_first.decode()},{without_proof}".encode()
        signature = hmac.digest(stored_key, auth, self.hash)
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        server_key = hmac.digest(salted, b"Server Key", self.hash)
        self.server_signature = hmac.digest(server_key, auth, self.hash)
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()

    def verify(self, server_final: bytes | None) -> bool:
        return server_final == b"v=" + base64.b64encode(self.server_signature)


def run_scram(m: Mechanism, client: ScramClient) -> tuple[bytes, sasl.SaslStep]:
    first = m.step(client.first())
    assert isinstance(first, Challenge), first
    return first.data, m.step(client.final(first.data))


def client_for(name: str, user: str, password: str, **kw: object) -> ScramClient:
    if "PLUS" in name and "cb_data" not in kw:
        kw["cb_data"] = CB.data["tls-exporter"]
    return ScramClient(name, user, password, **kw)  # type: ignore[arg-type]


# -- RFC test vectors --------------------------------------------------------------------------


def rfc_credentials() -> Credentials:
    return Credentials(
        scram_sha1=scram_keys("sha1", "pencil", base64.b64decode("QSXCR+Q6sek8bf92"), 4096),
        scram_sha256=scram_keys(
            "sha256", "pencil", base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ=="), 4096
        ),
        ha1_md5="0" * 32,
        ha1_sha256="0" * 64,
    )


def test_rfc_5802_scram_sha_1_example() -> None:
    creds = rfc_credentials()
    m = mech(
        "SCRAM-SHA-1",
        NO_CB,
        tls=False,
        nonce=lambda: "3rfcNHYJY1ZVvWVs7j",
        accounts={"user": (creds, True)}.get,
    )
    assert m.step(b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL") == Challenge(
        b"r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096"
    )
    assert m.step(
        b"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts="
    ) == Success("user", b"v=rmF9pqV8S7suAoZWja4dJRkFsKQ=")


def test_rfc_7677_scram_sha_256_example() -> None:
    creds = rfc_credentials()
    m = mech(
        "SCRAM-SHA-256",
        NO_CB,
        tls=False,
        nonce=lambda: "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
        accounts={"user": (creds, True)}.get,
    )
    assert m.step(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO") == Challenge(
        b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
    )
    assert m.step(
        b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
        b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
    ) == Success("user", b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")


# -- what is offered ---------------------------------------------------------------------------


def test_offered_in_preference_order_with_channel_binding_and_tls() -> None:
    assert offered_mechanisms(True, ["tls-exporter"]) == [
        "SCRAM-SHA-256-PLUS",
        "SCRAM-SHA-1-PLUS",
        "SCRAM-SHA-256",
        "SCRAM-SHA-1",
        "PLAIN",
    ]


def test_no_plus_without_channel_binding_and_no_plain_without_tls() -> None:
    assert offered_mechanisms(True, []) == ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"]
    assert offered_mechanisms(False, []) == ["SCRAM-SHA-256", "SCRAM-SHA-1"]


@pytest.mark.parametrize(
    ("name", "cb", "tls"),
    [
        ("SCRAM-SHA-256-PLUS", NO_CB, True),
        ("SCRAM-SHA-1-PLUS", NO_CB, True),
        ("PLAIN", NO_CB, False),
        ("DIGEST-MD5", CB, True),
        ("scram-sha-256", CB, True),
        ("", CB, True),
    ],
)
def test_mechanism_not_offered_cannot_be_made(name: str, cb: ChannelBinding, tls: bool) -> None:
    kw = {"lookup": lookup, "decoy_secret": SECRET, "channel_binding": cb, "tls": tls}
    assert make_mechanism(name, **kw) is None  # type: ignore[arg-type]


def test_only_plain_is_blocking() -> None:
    assert mech("PLAIN").blocking
    assert not any(mech(n).blocking for n in SCRAMS)


# -- full exchanges ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", SCRAMS)
def test_scram_login_succeeds_and_server_proves_itself(name: str) -> None:
    client = client_for(name, "alice", "secret")
    _, result = run_scram(mech(name), client)
    assert isinstance(result, Success) and result.username == "alice"
    assert client.verify(result.data)


@pytest.mark.parametrize("cb_type", ["tls-exporter", "tls-server-end-point"])
@pytest.mark.parametrize("name", ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-1-PLUS"])
def test_scram_plus_binds_to_either_channel_binding_type(name: str, cb_type: str) -> None:
    client = ScramClient(name, "alice", "secret", gs2=f"p={cb_type},,", cb_data=CB.data[cb_type])
    _, result = run_scram(mech(name), client)
    assert isinstance(result, Success) and client.verify(result.data)


@pytest.mark.parametrize("name", ["SCRAM-SHA-256", "SCRAM-SHA-1"])
def test_scram_works_without_tls(name: str) -> None:
    client = client_for(name, "alice", "secret")
    _, result = run_scram(mech(name, NO_CB, tls=False), client)
    assert isinstance(result, Success)


def test_user_name_is_prepared_before_lookup() -> None:
    _, result = run_scram(mech("SCRAM-SHA-256"), client_for("SCRAM-SHA-256", "ALICE", "secret"))
    assert result == Success("alice", result.data if isinstance(result, Success) else None)


def test_escaped_comma_and_equals_in_user_name() -> None:
    # RFC 5802 §5.1: ',' and '=' travel as =2C and =3D
    client = client_for("SCRAM-SHA-256", "a,b=c", "pw")
    assert client.first().startswith(b"n,,n=a=2Cb=3Dc,")
    _, result = run_scram(mech("SCRAM-SHA-256"), client)
    assert isinstance(result, Success) and result.username == "a,b=c"


def test_plain_login_succeeds() -> None:
    assert mech("PLAIN").step(b"\0alice\0secret") == Success("alice", None)
    assert mech("PLAIN").step(b"\0Alice\0secret") == Success("alice", None)


def test_authzid_naming_the_user_is_accepted() -> None:
    assert mech("PLAIN").step(b"alice@example.test\0alice\0secret") == Success("alice")
    client = client_for("SCRAM-SHA-256", "alice", "secret", gs2="n,a=alice@example.test,")
    assert isinstance(run_scram(mech("SCRAM-SHA-256"), client)[1], Success)


@pytest.mark.parametrize("authzid", ["bob@example.test", "example.test", "alice@example.test/r"])
def test_authzid_naming_someone_else_is_refused(authzid: str) -> None:
    m = mech("PLAIN")
    assert m.step(f"{authzid}\0alice\0secret".encode()) == Failure("invalid-authzid")
    m = mech("SCRAM-SHA-256")
    assert m.step(f"n,a={authzid},n=alice,r=abc".encode()) == Failure("invalid-authzid")


def test_authzid_in_another_domain_is_refused_when_domain_is_known() -> None:
    m = mech("PLAIN", domain=DOMAIN)
    assert m.step(b"alice@other.test\0alice\0secret") == Failure("invalid-authzid")
    m = mech("PLAIN", domain=DOMAIN)
    assert m.step(b"alice@example.test\0alice\0secret") == Success("alice")


def test_no_initial_response_gets_an_empty_challenge() -> None:
    # RFC 6120 §6.4.2: <auth/> without data (or '=') is answered with an empty challenge
    m = mech("SCRAM-SHA-256")
    assert m.step(b"") == Challenge(b"")
    client = client_for("SCRAM-SHA-256", "alice", "secret")
    first = m.step(client.first())
    assert isinstance(first, Challenge)
    assert isinstance(m.step(client.final(first.data)), Success)
    p = mech("PLAIN")
    assert p.step(b"") == Challenge(b"")
    assert p.step(b"\0alice\0secret") == Success("alice")


def test_empty_response_twice_is_malformed() -> None:
    for name in ("SCRAM-SHA-1", "PLAIN"):
        m = mech(name)
        assert m.step(b"") == Challenge(b"")
        assert m.step(b"").condition == "malformed-request"  # type: ignore[union-attr]


# -- failures ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SCRAMS)
def test_scram_wrong_password_is_not_authorized(name: str) -> None:
    _, result = run_scram(mech(name), client_for(name, "alice", "wrong"))
    assert result == Failure("not-authorized")


@pytest.mark.parametrize("name", SCRAMS)
def test_scram_unknown_user_looks_like_a_wrong_password(name: str) -> None:
    known_first, known = run_scram(mech(name), client_for(name, "alice", "wrong"))
    unknown_first, unknown = run_scram(mech(name), client_for(name, "nobody", "wrong"))
    assert known == unknown == Failure("not-authorized")
    shape = re.compile(rb"r=Cl1ent\+n0nce[A-Za-z0-9+/]{32},s=[A-Za-z0-9+/]{22}==,i=4096\Z")
    assert shape.match(known_first) and shape.match(unknown_first)
    # the same fake salt every time, as a real account's salt would be
    again_first, _ = run_scram(mech(name), client_for(name, "nobody", "x"))
    salt = re.compile(rb",s=([^,]+),")
    assert salt.search(unknown_first)[1] == salt.search(again_first)[1]  # type: ignore[index]


@pytest.mark.parametrize("name", SCRAMS)
def test_scram_unpreparable_user_name_looks_like_a_wrong_password(name: str) -> None:
    first, result = run_scram(mech(name), client_for(name, "no body@x", "wrong"))
    assert b",s=" in first and result == Failure("not-authorized")


def test_plain_unknown_user_looks_like_a_wrong_password_and_costs_the_same(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    checked: list[Credentials] = []

    def counting(creds: Credentials, password: str) -> bool:
        checked.append(creds)
        return check_password(creds, password)

    monkeypatch.setattr(sasl, "check_password", counting)
    wrong = mech("PLAIN").step(b"\0alice\0wrong")
    unknown = mech("PLAIN").step(b"\0nobody\0wrong")
    assert wrong == unknown == Failure("not-authorized")
    assert len(checked) == 2
    assert checked[0].scram_sha256.iterations == checked[1].scram_sha256.iterations


def test_plain_wrong_password_is_not_authorized() -> None:
    assert mech("PLAIN").step(b"\0alice\0Secret") == Failure("not-authorized")
    assert mech("PLAIN").step(b"\0alice\0sec\x07ret") == Failure("not-authorized")


@pytest.mark.parametrize("name", [*SCRAMS, "PLAIN"])
def test_disabled_account_is_told_only_after_a_correct_password(name: str) -> None:
    if name == "PLAIN":
        assert mech(name).step(b"\0bob\0hunter2") == Failure("account-disabled")
        assert mech(name).step(b"\0bob\0wrong") == Failure("not-authorized")
        return
    assert run_scram(mech(name), client_for(name, "bob", "hunter2"))[1] == Failure(
        "account-disabled"
    )
    assert run_scram(mech(name), client_for(name, "bob", "wrong"))[1] == Failure("not-authorized")


@pytest.mark.parametrize("name", ["SCRAM-SHA-256", "SCRAM-SHA-1"])
def test_y_flag_when_plus_was_offered_is_a_downgrade(name: str) -> None:
    # RFC 5802 §6: 'y' says "I saw no -PLUS"; we offered it, so someone removed it
    client = client_for(name, "alice", "secret", gs2="y,,")
    result = mech(name, CB).step(client.first())
    assert isinstance(result, Failure) and result.condition == "not-authorized"


@pytest.mark.parametrize("name", ["SCRAM-SHA-256", "SCRAM-SHA-1"])
def test_y_flag_without_channel_binding_on_offer_is_fine(name: str) -> None:
    client = client_for(name, "alice", "secret", gs2="y,,")
    _, result = run_scram(mech(name, NO_CB), client)
    assert isinstance(result, Success) and client.verify(result.data)


@pytest.mark.parametrize("name", ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-1-PLUS"])
def test_plus_with_other_channel_binding_data_is_refused(name: str) -> None:
    client = client_for(name, "alice", "secret", cb_data=b"\x09" * 32)  # another TLS session
    _, result = run_scram(mech(name), client)
    assert isinstance(result, Failure) and result.condition == "not-authorized"


def test_plus_with_an_unsupported_binding_type_is_refused() -> None:
    client = client_for("SCRAM-SHA-256-PLUS", "alice", "secret", gs2="p=tls-unique,,")
    result = mech("SCRAM-SHA-256-PLUS").step(client.first())
    assert isinstance(result, Failure) and result.condition == "not-authorized"


def test_plus_without_p_flag_is_malformed() -> None:
    for gs2 in ("n,,", "y,,"):
        client = client_for("SCRAM-SHA-256-PLUS", "alice", "secret", gs2=gs2)
        result = mech("SCRAM-SHA-256-PLUS").step(client.first())
        assert isinstance(result, Failure) and result.condition == "malformed-request"


def test_p_flag_on_a_plain_scram_mechanism_is_malformed() -> None:
    client = client_for("SCRAM-SHA-256", "alice", "secret", gs2="p=tls-exporter,,")
    result = mech("SCRAM-SHA-256").step(client.first())
    assert isinstance(result, Failure) and result.condition == "malformed-request"


def test_changed_gs2_header_in_final_message_is_refused() -> None:
    # the client says 'n' first, then claims 'y' in c=: the header must not change
    m = mech("SCRAM-SHA-256", NO_CB)
    client = client_for("SCRAM-SHA-256", "alice", "secret")
    first = m.step(client.first())
    assert isinstance(first, Challenge)
    client.gs2 = "y,,"
    assert m.step(client.final(first.data)).condition == "not-authorized"  # type: ignore[union-attr]


def test_nonce_mismatch_is_refused() -> None:
    m = mech("SCRAM-SHA-256")
    client = client_for("SCRAM-SHA-256", "alice", "secret")
    first = m.step(client.first())
    assert isinstance(first, Challenge)
    final = client.final(first.data, nonce="Cl1ent+n0nceFORGED")
    assert m.step(final) == Failure("not-authorized", "nonce does not match")


@pytest.mark.parametrize(
    ("message", "condition"),
    [
        (b"n,,m=ext,n=alice,r=abc", "malformed-request"),
        (b"n,,n=alice", "malformed-request"),
        (b"n,,r=abc,n=alice", "malformed-request"),
        (b"n,,n=,r=abc", "malformed-request"),
        (b"n,,n=al=2Xice,r=abc", "malformed-request"),
        (b"n,,n=alice,r=a,b", "malformed-request"),
        (b"n,,n=alice,r=", "malformed-request"),
        (b"n,,n=alice,r=a\x7fb", "malformed-request"),
        (b"x,,n=alice,r=abc", "malformed-request"),
        (b"n,b=x,n=alice,r=abc", "malformed-request"),
        (b"n,a=,n=alice,r=abc", "malformed-request"),
        (b"n=alice,r=abc", "malformed-request"),
        (b"n,,n=\xff,r=abc", "malformed-request"),
        (b"p=bad name,,n=alice,r=abc", "malformed-request"),
    ],
)
def test_malformed_client_first_messages(message: bytes, condition: str) -> None:
    result = mech("SCRAM-SHA-256", NO_CB).step(message)
    assert isinstance(result, Failure) and result.condition == condition


@pytest.mark.parametrize(
    ("final", "condition"),
    [
        (b"c=biws,r={r}", "malformed-request"),
        (b"r={r},c=biws,p=AAAA", "malformed-request"),
        (b"c=biws,p=AAAA", "malformed-request"),
        (b"c=bi!ws,r={r},p=" + base64.b64encode(b"x" * 32), "incorrect-encoding"),
        (b"c=biws,r={r},p=not*base64", "incorrect-encoding"),
        (b"c=biws,r={r},p=" + base64.b64encode(b"short"), "malformed-request"),
        (b"c=biws,r={r},p=" + base64.b64encode(b"x" * 32), "not-authorized"),
        (b"c=biws,r={r},x=ext,p=" + base64.b64encode(b"x" * 32), "not-authorized"),
        (b"c=biws,r={r},,p=" + base64.b64encode(b"x" * 32), "malformed-request"),
    ],
)
def test_malformed_client_final_messages(final: bytes, condition: str) -> None:
    m = mech("SCRAM-SHA-256", NO_CB)
    first = m.step(b"n,,n=alice,r=abc")
    assert isinstance(first, Challenge)
    nonce = first.data.split(b",")[0][2:]
    result = m.step(final.replace(b"{r}", nonce))
    assert isinstance(result, Failure) and result.condition == condition


@pytest.mark.parametrize(
    "message",
    [b"alice\0secret", b"\0\0secret", b"\0alice\0", b"\0alice\0secret\0", b"\0al\xffice\0secret"],
)
def test_malformed_plain_messages(message: bytes) -> None:
    assert mech("PLAIN").step(message).condition == "malformed-request"  # type: ignore[union-attr]


def test_oversized_message_is_refused() -> None:
    result = mech("PLAIN").step(b"\0alice\0" + b"x" * 10_000)
    assert isinstance(result, Failure) and result.condition == "malformed-request"


@pytest.mark.parametrize("name", [*SCRAMS, "PLAIN"])
def test_nothing_after_the_outcome(name: str) -> None:
    m = mech(name)
    if name == "PLAIN":
        assert isinstance(m.step(b"\0alice\0secret"), Success)
    else:
        assert isinstance(run_scram(m, client_for(name, "alice", "secret"))[1], Success)
    assert m.step(b"anything") == Failure(
        "malformed-request", "the authentication exchange is over"
    )
    failed = mech(name)
    assert isinstance(failed.step(b"garbage"), Failure)
    assert failed.step(b"\0alice\0secret").condition == "malformed-request"  # type: ignore[union-attr]


def test_a_failing_account_lookup_ends_the_exchange() -> None:
    def broken(username: str) -> tuple[Credentials, bool] | None:
        raise RuntimeError("store unavailable")

    m = mech("SCRAM-SHA-256", accounts=broken)
    with pytest.raises(RuntimeError):
        m.step(b"n,,n=alice,r=abc")
    assert m.step(b"n,,n=alice,r=abc").condition == "malformed-request"  # type: ignore[union-attr]


def test_unknown_failure_condition_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        Failure("nope")


# -- property tests ----------------------------------------------------------------------------

STEP_TYPES = (Challenge, Success, Failure)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from([*SCRAMS, "PLAIN"]),
    st.lists(st.binary(max_size=300), min_size=1, max_size=4),
)
def test_random_bytes_never_raise(name: str, messages: list[bytes]) -> None:
    m = mech(name)
    for data in messages:
        assert isinstance(m.step(data), STEP_TYPES)


_scram_text = st.text(alphabet="nyrpcmas=,2CD3Xbiw+/ \x00\xe9", max_size=60)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(SCRAMS), _scram_text, _scram_text)
def test_scram_shaped_garbage_never_raises(name: str, first: str, final: str) -> None:
    m = mech(name)
    assert isinstance(m.step(first.encode()), STEP_TYPES)
    assert isinstance(m.step(final.encode()), STEP_TYPES)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(SCRAMS), st.binary(max_size=200))
def test_garbage_client_final_after_a_real_first_never_raises(name: str, final: bytes) -> None:
    m = mech(name)
    client = client_for(name, "alice", "secret")
    assert isinstance(m.step(client.first()), Challenge)
    result = m.step(final)
    assert isinstance(result, Failure)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=40), st.binary(max_size=40), st.binary(max_size=40))
def test_plain_with_random_fields_never_raises(a: bytes, b: bytes, c: bytes) -> None:
    result = mech("PLAIN").step(a + b"\0" + b + b"\0" + c)
    assert isinstance(result, STEP_TYPES)
    assert not isinstance(result, Success)


# -- one-time test credentials (se-ctl test im|presence) ----------------------------------------


class OneTime:
    """The account side of a one-time credential: accepted once for its user."""

    def __init__(self, user: str, token: str) -> None:
        self.live = {(user, token)}

    def __call__(self, username: str, token: str) -> bool:
        if (username, token) in self.live:
            self.live.discard((username, token))
            return True
        return False


def plain_with_token(check: OneTime, payload: bytes) -> sasl.SaslStep:
    m = make_mechanism(
        "PLAIN", lookup=lookup, decoy_secret=SECRET, channel_binding=NO_CB, tls=True,
        test_token=check,
    )  # fmt: skip
    assert m is not None
    return m.step(payload)


def test_plain_accepts_a_one_time_credential_once() -> None:
    check = OneTime("alice", "se-test-abc")
    assert plain_with_token(check, b"\0alice\0se-test-abc") == Success("alice")
    assert plain_with_token(check, b"\0alice\0se-test-abc") == Failure("not-authorized")


def test_one_time_credential_is_not_a_password_for_another_user_or_a_disabled_one() -> None:
    assert plain_with_token(OneTime("alice", "t"), b"\0a,b=c\0t") == Failure("not-authorized")
    bob = OneTime("bob", "t")
    assert plain_with_token(bob, b"\0bob\0t") == Failure("account-disabled")


def test_normal_passwords_still_work_beside_one_time_credentials() -> None:
    assert plain_with_token(OneTime("alice", "t"), b"\0alice\0secret") == Success("alice")
    assert plain_with_token(OneTime("alice", "t"), b"\0alice\0wrong") == Failure("not-authorized")
