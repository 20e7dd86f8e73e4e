"""Digest authentication (RFC 7616, RFC 8760, RFC 2617, RFC 3261 section 22): header syntax, the RFC test vectors,
the UAS verifier with stateless nonces and replay protection, and the UAC client."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ivr.sip.auth import (
    AuthError,
    AuthField,
    AuthOutcome,
    AuthSyntaxError,
    Credential,
    DigestChallenge,
    DigestClient,
    DigestCredentials,
    DigestVerifier,
    authorization_nonces,
    compute_ha1,
    digest_response,
    format_challenge,
    format_credentials,
    parse_auth_fields,
    parse_credentials,
    static_credentials,
)
from ivr.sip.message import Request, Response, make_response, parse_message

# ---- helpers --------------------------------------------------------------------------------------------------------

SECRET = b"0123456789abcdef0123456789abcdef"
REALM = "ivr.example.com"
NOW = 1_700_000_000.0

INVITE = """\
INVITE sip:100@ivr.example.com SIP/2.0
Via: SIP/2.0/UDP 192.0.2.4:5060;branch=z9hG4bKnashds8
Max-Forwards: 70
From: Caller <sip:caller@example.org>;tag=1928301774
To: <sip:100@ivr.example.com>
Call-ID: a84b4c76e66710@192.0.2.4
CSeq: 314159 INVITE
Contact: <sip:caller@192.0.2.4>
Content-Type: application/sdp
Content-Length: 4

v=0
"""


def sip(text: str) -> Request | Response:
    head, _, body = text.partition("\n\n")
    return parse_message(head.replace("\n", "\r\n").encode() + b"\r\n\r\n" + body.replace("\n", "\r\n").encode())


def invite(*extra: tuple[str, str], uri: str | None = None, body: bytes | None = None) -> Request:
    request = sip(INVITE)
    assert isinstance(request, Request)
    for name, value in extra:
        request.headers.add(name, value)
    if uri is not None:
        request.uri = uri
    if body is not None:
        request.body = body
    return request


def fixed_random(n: int) -> bytes:
    return bytes(range(n))


def verifier(**kwargs: object) -> DigestVerifier:
    params: dict[str, object] = {
        "realm": REALM,
        "secret": SECRET,
        "credentials": static_credentials({"alice": "wonderland"}),
    }
    params.update(kwargs)
    return DigestVerifier(**params)  # type: ignore[arg-type]


def challenge_response(v: DigestVerifier, now: float = NOW, request: Request | None = None) -> Response:
    request = request or invite()
    status = v.headers.status
    return make_response(request, status, to_tag="t1", extra=v.challenge_headers(now))


def authorized(
    v: DigestVerifier,
    client: DigestClient,
    *,
    now: float = NOW,
    request: Request | None = None,
) -> Request:
    """The request re-sent with credentials answering ``v``'s challenge."""
    request = request or invite()
    for auth in client.authorize(request, challenge_response(v, now, request)):
        request.headers.add(auth.name, auth.value)
    return request


# ---- header syntax --------------------------------------------------------------------------------------------------

RFC7616_CHALLENGES = (
    'Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm=SHA-256, '
    'nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS", '
    'Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm=MD5, '
    'nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"'
)


def test_two_challenges_in_one_header_field_are_split_at_the_second_scheme() -> None:
    fields = parse_auth_fields(RFC7616_CHALLENGES)
    assert [f.scheme for f in fields] == ["Digest", "Digest"]
    assert [f.get("algorithm") for f in fields] == ["SHA-256", "MD5"]
    assert fields[0].get("qop") == "auth, auth-int"
    assert fields[1].get("nonce") == "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"


def test_quoted_strings_unescape_and_keep_commas_and_equals_signs() -> None:
    (field,) = parse_auth_fields(r'Digest realm="a\"b\\c, d=e", nonce=abc')
    assert field.get("realm") == 'a"b\\c, d=e'
    assert field.get("nonce") == "abc"


def test_parameter_names_and_scheme_compare_case_insensitively_and_blanks_around_equals_are_allowed() -> None:
    (field,) = parse_auth_fields('DIGEST Realm = "r" ,NONCE= "n",  ,algorithm =md5')
    assert field.is_digest
    assert field.params == (("realm", "r"), ("nonce", "n"), ("algorithm", "md5"))
    assert DigestChallenge.from_field(field).algorithm == "MD5"


def test_token68_scheme_followed_by_a_digest_challenge() -> None:
    fields = parse_auth_fields('Basic dXNlcjpwYXNz==, Digest realm="r", nonce="n"')
    assert fields[0] == AuthField("Basic", (), "dXNlcjpwYXNz==")
    assert fields[1].get("realm") == "r"


def test_bare_scheme_without_parameters() -> None:
    assert parse_auth_fields("Negotiate, Digest realm=r, nonce=n")[0] == AuthField("Negotiate")


def test_unquoted_base64_nonce_from_a_lax_peer_is_read_whole() -> None:
    (field,) = parse_auth_fields("Digest realm=r, nonce=ab/cd+ef==, qop=auth")
    assert field.get("nonce") == "ab/cd+ef=="


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('Digest realm="open', "unterminated quoted string"),
        ('realm="r", Digest nonce="n"', "parameter before any authentication scheme"),
        ('Digest realm="a", realm="b"', "appears twice"),
        ('Digest realm="a" nonce="b"', "expected ',' or the end"),
        ("Digest realm=", "expected a value"),
        ('Digest"x"', "expected a blank after the scheme"),
        ("   ,  , ", "empty authentication header"),
        ("Basic abc==, realm=x", "token68 and cannot also take parameters"),
        ('Digest realm="a\\', "unterminated quoted string"),
        ("@Digest realm=a", "expected an authentication scheme"),
    ],
)
def test_malformed_headers_raise_a_400_naming_the_problem(value: str, message: str) -> None:
    with pytest.raises(AuthSyntaxError) as info:
        parse_auth_fields(value)
    assert message in info.value.reason
    assert info.value.status == 400


def test_authorization_must_carry_exactly_one_set_of_credentials() -> None:
    with pytest.raises(AuthSyntaxError, match="one set of credentials"):
        parse_credentials('Digest username="a", realm="r", Digest username="b"')


def test_challenge_quotes_qop_but_credentials_send_qop_nc_and_algorithm_as_tokens() -> None:
    challenge = DigestChallenge(realm="r", nonce="n", algorithm="SHA-256", qop=("auth",), opaque="o")
    assert str(challenge) == 'Digest realm="r", qop="auth", algorithm=SHA-256, nonce="n", opaque="o"'
    creds = DigestCredentials(
        username="u", realm="r", nonce="n", uri="sip:x@y", response="ab", algorithm="MD5", qop="auth",
        nc="00000001", cnonce="c",
    )  # fmt: skip
    assert str(creds) == (
        'Digest username="u", realm="r", nonce="n", uri="sip:x@y", response="ab", algorithm=MD5, qop=auth, '
        'nc=00000001, cnonce="c"'
    )


def test_formatting_refuses_values_that_would_inject_header_lines() -> None:
    with pytest.raises(ValueError, match="CR or LF"):
        format_challenge(AuthField("Digest", (("realm", "a\r\nVia: x"),)))


_names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-_0123456789", min_size=1, max_size=12)
_values = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), min_size=0, max_size=30
)
_schemes = st.sampled_from(["Digest", "digest", "Basic", "X-Custom"])


@st.composite
def auth_fields(draw: st.DrawFn) -> AuthField:
    names = draw(st.lists(_names, min_size=1, max_size=6, unique=True))
    return AuthField(draw(_schemes), tuple((name, draw(_values)) for name in names))


@settings(max_examples=300, deadline=None)
@given(auth_fields())
def test_formatted_challenge_parses_back_to_the_same_field(field: AuthField) -> None:
    assert parse_auth_fields(format_challenge(field)) == [field]
    assert parse_credentials(format_credentials(field)) == field


@settings(max_examples=200, deadline=None)
@given(st.lists(auth_fields(), min_size=1, max_size=4))
def test_several_challenges_joined_in_one_header_parse_back_in_order(fields: list[AuthField]) -> None:
    assert parse_auth_fields(", ".join(format_challenge(f) for f in fields)) == fields


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_parser_raises_only_auth_syntax_error_on_any_text(text: str) -> None:
    try:
        fields = parse_auth_fields(text)
    except AuthSyntaxError:
        return
    assert fields and all(f.scheme for f in fields)


# ---- RFC test vectors -----------------------------------------------------------------------------------------------

RFC7616_CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"


@pytest.mark.parametrize(
    ("index", "expected"),
    [
        (0, "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
        (1, "8ca523f5e9506fed4657c9700eebdbec"),
    ],
    ids=["SHA-256", "MD5"],
)
def test_rfc7616_section_3_9_1_example_response(index: int, expected: str) -> None:
    challenge = DigestChallenge.from_field(parse_auth_fields(RFC7616_CHALLENGES)[index])
    creds = DigestClient("Mufasa", "Circle of Life").credentials(
        challenge, method="GET", uri="/dir/index.html", cnonce=RFC7616_CNONCE
    )
    assert creds.response == expected
    assert (creds.qop, creds.nc, creds.opaque) == ("auth", "00000001", "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS")


def test_rfc7616_authorization_header_text_parses_and_its_response_recomputes() -> None:
    text = (
        'Digest username="Mufasa", realm="http-auth@example.org", uri="/dir/index.html", algorithm=SHA-256, '
        'nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", nc=00000001, '
        'cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ", qop=auth, '
        'response="753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1", '
        'opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"'
    )
    creds = DigestCredentials.from_field(parse_credentials(text))
    ha1 = compute_ha1(creds.algorithm, creds.username, creds.realm, "Circle of Life")
    assert creds.response == digest_response(
        creds.algorithm, ha1=ha1, nonce=creds.nonce, method="GET", uri=creds.uri, qop=creds.qop, nc=creds.nc,
        cnonce=creds.cnonce,
    )  # fmt: skip


def test_rfc2617_section_3_5_md5_example_response() -> None:
    (field,) = parse_auth_fields(
        'Digest realm="testrealm@host.com", qop="auth,auth-int", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", '
        'opaque="5ccc069c403ebaf9f0171e9517f40e41"'
    )
    challenge = DigestChallenge.from_field(field)
    assert challenge.algorithm == "MD5" and challenge.qop == ("auth", "auth-int")
    creds = DigestClient("Mufasa", "Circle Of Life").credentials(
        challenge, method="GET", uri="/dir/index.html", cnonce="0a4f113b"
    )
    assert creds.response == "6629fae49393a05397450978507c4ef1"


def test_rfc2069_challenge_without_qop_gets_a_response_without_nc_and_cnonce() -> None:
    challenge = DigestChallenge(realm="testrealm@host.com", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093")
    creds = DigestClient("Mufasa", "CircleOfLife").credentials(challenge, method="GET", uri="/dir/index.html")
    # RFC 2069 section 2.4 example.
    assert creds.response == "1949323746fe6a43ef61f9606e7febea"
    assert creds.qop is None and creds.nc is None and creds.cnonce is None
    assert "nc=" not in str(creds)


# ---- UAS: challenges ------------------------------------------------------------------------------------------------


def test_challenge_offers_sha256_then_md5_with_one_nonce_qop_auth_and_opaque() -> None:
    headers = verifier().challenge_headers(NOW)
    assert [name for name, _ in headers] == ["WWW-Authenticate", "WWW-Authenticate"]
    challenges = [DigestChallenge.from_field(parse_auth_fields(value)[0]) for _, value in headers]
    assert [c.algorithm for c in challenges] == ["SHA-256", "MD5"]
    assert challenges[0].nonce == challenges[1].nonce
    assert all(c.qop == ("auth",) and c.opaque and c.realm == REALM and not c.stale for c in challenges)


def test_each_challenge_gets_a_fresh_nonce() -> None:
    v = verifier()
    assert v.new_nonce(NOW) != v.new_nonce(NOW)


def test_401_with_the_challenge_serialises_and_parses_as_sip() -> None:
    response = challenge_response(verifier())
    parsed = sip(response.to_bytes().decode().replace("\r\n", "\n"))
    assert isinstance(parsed, Response) and parsed.status == 401
    assert len(parsed.headers.get_all("WWW-Authenticate")) == 2


# ---- UAS: verification ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithms", [("SHA-256", "MD5"), ("MD5",), ("SHA-256-sess",), ("MD5-sess",)])
def test_client_answer_to_our_challenge_is_accepted(algorithms: tuple[str, ...]) -> None:
    v = verifier(algorithms=algorithms)
    request = authorized(v, DigestClient("alice", "wonderland"))
    result = v.verify(request, NOW + 1)
    assert result.ok and result.status is None and result.username == "alice"
    assert algorithms[0] in result.detail


def test_client_preferring_md5_is_accepted_too() -> None:
    v = verifier()
    request = authorized(v, DigestClient("alice", "wonderland", algorithms=("MD5",)))
    assert v.verify(request, NOW).ok


def test_request_without_credentials_is_challenged_401() -> None:
    result = verifier().verify(invite(), NOW)
    assert (result.outcome, result.status, result.challenge) == (AuthOutcome.MISSING, 401, True)


def test_credentials_for_another_realm_only_count_as_missing() -> None:
    other = DigestVerifier(realm="other", secret=SECRET, credentials=static_credentials({"alice": "wonderland"}))
    request = authorized(other, DigestClient("alice", "wonderland"))
    result = verifier().verify(request, NOW)
    assert result.outcome is AuthOutcome.MISSING and "'other'" in result.detail


def test_wrong_password_is_403_and_the_public_reason_does_not_say_why() -> None:
    v = verifier()
    result = v.verify(authorized(v, DigestClient("alice", "looking-glass")), NOW)
    assert (result.outcome, result.status, result.challenge) == (AuthOutcome.WRONG_PASSWORD, 403, False)
    assert result.public_reason == "authentication failed" and "alice" in result.detail
    assert v.response_headers(result, NOW) == []


def test_unknown_user_is_403_with_the_same_public_reason_as_a_wrong_password() -> None:
    v = verifier()
    result = v.verify(authorized(v, DigestClient("mallory", "x")), NOW)
    assert (result.outcome, result.status) == (AuthOutcome.UNKNOWN_USER, 403)
    assert result.public_reason == "authentication failed"


def test_uri_that_is_not_the_request_uri_is_400() -> None:
    v = verifier()
    request = authorized(v, DigestClient("alice", "wonderland"))
    request.uri = "sip:999@ivr.example.com"
    result = v.verify(request, NOW)
    assert (result.outcome, result.status) == (AuthOutcome.URI_MISMATCH, 400)


def test_uri_differing_only_in_host_case_matches_the_request_uri() -> None:
    v = verifier()
    request = authorized(v, DigestClient("alice", "wonderland"))  # uri="sip:100@ivr.example.com"
    request.uri = "sip:100@IVR.Example.COM"  # a proxy rewrote the host's case: the same URI (RFC 3261 19.1.4)
    assert v.verify(request, NOW).ok
    request = authorized(v, DigestClient("alice", "wonderland"))
    request.uri = "sip:100@ivr.example.com:5070"
    assert v.verify(request, NOW).outcome is AuthOutcome.URI_MISMATCH


def test_stale_nonce_with_right_password_is_rechallenged_with_stale_true() -> None:
    v = verifier(nonce_lifetime=60)
    request = authorized(v, DigestClient("alice", "wonderland"), now=NOW)
    result = v.verify(request, NOW + 61)
    assert (result.outcome, result.status, result.stale) == (AuthOutcome.STALE_NONCE, 401, True)
    headers = v.response_headers(result, NOW + 61)
    assert headers and all(DigestChallenge.from_field(parse_auth_fields(h)[0]).stale for _, h in headers)


def test_stale_nonce_with_wrong_password_is_refused_not_marked_stale() -> None:
    v = verifier(nonce_lifetime=60)
    result = v.verify(authorized(v, DigestClient("alice", "nope"), now=NOW), NOW + 61)
    assert result.outcome is AuthOutcome.WRONG_PASSWORD


def test_nonce_from_another_secret_or_tampered_is_unknown_and_rechallenged() -> None:
    foreign = verifier(secret=b"another secret of 32 bytes......")
    request = authorized(foreign, DigestClient("alice", "wonderland"))
    result = verifier().verify(request, NOW)
    assert (result.outcome, result.status) == (AuthOutcome.UNKNOWN_NONCE, 401)
    v = verifier()
    nonce = v.new_nonce(NOW)
    tampered = nonce[:-2] + ("AA" if nonce[-2:] != "AA" else "BB")
    assert v._check_nonce(tampered) is None
    assert v._check_nonce("not a nonce") is None


def test_node_sharing_the_secret_accepts_a_nonce_another_node_issued() -> None:
    node_a, node_b = verifier(), verifier()
    request = authorized(node_a, DigestClient("alice", "wonderland"))
    assert node_b.verify(request, NOW + 5).ok


def test_nonce_issued_in_the_future_beyond_the_clock_skew_is_unknown() -> None:
    v = verifier(max_clock_skew=30)
    request = authorized(v, DigestClient("alice", "wonderland"), now=NOW + 60)
    assert v.verify(request, NOW).outcome is AuthOutcome.UNKNOWN_NONCE
    request = authorized(v, DigestClient("alice", "wonderland"), now=NOW + 10)
    assert v.verify(request, NOW).ok


def test_replayed_nonce_count_is_refused_and_rechallenged() -> None:
    v = verifier()
    request = authorized(v, DigestClient("alice", "wonderland"))
    assert v.verify(request, NOW).ok
    result = v.verify(request, NOW + 1)
    assert (result.outcome, result.status) == (AuthOutcome.REPLAYED, 401)


def _request_with_nc(v: DigestVerifier, challenge: DigestChallenge, nc: int) -> Request:
    client = DigestClient("alice", "wonderland")
    client._counts[challenge.nonce] = nc - 1
    request = invite()
    request.headers.add("Authorization", str(client.answer(challenge, request).value))
    return request


def test_nonce_counts_that_overtake_each_other_are_each_accepted_once() -> None:
    v = verifier()
    challenge = v.challenges(NOW)[0]
    assert v.verify(_request_with_nc(v, challenge, 3), NOW).ok
    assert v.verify(_request_with_nc(v, challenge, 1), NOW).ok
    assert v.verify(_request_with_nc(v, challenge, 2), NOW).ok
    assert v.verify(_request_with_nc(v, challenge, 2), NOW).outcome is AuthOutcome.REPLAYED
    assert v.verify(_request_with_nc(v, challenge, 100), NOW).ok
    assert v.verify(_request_with_nc(v, challenge, 4), NOW).outcome is AuthOutcome.REPLAYED  # below the window


def test_nonce_count_zero_is_malformed() -> None:
    v = verifier()
    assert v.verify(_request_with_nc(v, v.challenges(NOW)[0], 0), NOW).outcome is AuthOutcome.MALFORMED


def test_replay_memory_is_bounded_and_a_forgotten_nonce_counts_as_stale_never_replayable() -> None:
    v = verifier(max_tracked_nonces=2)
    first = authorized(v, DigestClient("alice", "wonderland"), now=NOW)
    second = authorized(v, DigestClient("alice", "wonderland"), now=NOW + 1)
    third = authorized(v, DigestClient("alice", "wonderland"), now=NOW + 2)
    assert v.verify(first, NOW + 3).ok and v.verify(second, NOW + 3).ok and v.verify(third, NOW + 3).ok
    assert v.tracked_nonces == 2
    replay = v.verify(first, NOW + 4)
    assert replay.outcome is AuthOutcome.STALE_NONCE and replay.challenge


def test_expired_nonces_leave_the_replay_memory() -> None:
    v = verifier(nonce_lifetime=10)
    assert v.verify(authorized(v, DigestClient("alice", "wonderland"), now=NOW), NOW).ok
    assert v.tracked_nonces == 1
    assert v.verify(authorized(v, DigestClient("alice", "wonderland"), now=NOW + 20), NOW + 20).ok
    assert v.tracked_nonces == 1


def test_opaque_must_come_back_unchanged() -> None:
    v = verifier()
    challenge = v.challenges(NOW)[0]
    forged = DigestChallenge(challenge.realm, challenge.nonce, challenge.algorithm, challenge.qop, opaque="zz")
    request = invite()
    request.headers.add("Authorization", DigestClient("alice", "wonderland").answer(forged, request).value)
    assert v.verify(request, NOW).outcome is AuthOutcome.UNKNOWN_NONCE


def test_algorithm_not_offered_is_rechallenged() -> None:
    v = verifier()
    challenge = DigestChallenge(REALM, v.new_nonce(NOW), "SHA-512-256", ("auth",), v.opaque)
    request = invite()
    request.headers.add("Authorization", DigestClient("alice", "wonderland").answer(challenge, request).value)
    result = v.verify(request, NOW)
    assert (result.outcome, result.status) == (AuthOutcome.UNSUPPORTED, 401)
    assert "SHA-256, MD5" in result.detail


def test_credentials_without_qop_are_refused_as_malformed() -> None:
    v = verifier()
    challenge = DigestChallenge(REALM, v.new_nonce(NOW), "MD5", (), v.opaque)
    request = invite()
    request.headers.add("Authorization", DigestClient("alice", "wonderland").answer(challenge, request).value)
    result = v.verify(request, NOW)
    assert (result.outcome, result.status) == (AuthOutcome.MALFORMED, 400)


@pytest.mark.parametrize(
    "value",
    ['Digest username="alice", realm="ivr.example.com", nonce="n"', 'Digest username="alice", realm="ivr.example.com'],
)
def test_unparseable_or_incomplete_credentials_are_400(value: str) -> None:
    result = verifier().verify(invite(("Authorization", value)), NOW)
    assert (result.outcome, result.status) == (AuthOutcome.MALFORMED, 400)


def test_stored_ha1_verifies_without_a_password() -> None:
    ha1 = {"SHA-256": compute_ha1("SHA-256", "alice", REALM, "wonderland")}
    v = verifier(credentials=static_credentials({"alice": Credential(ha1=ha1)}))
    assert v.verify(authorized(v, DigestClient("alice", "wonderland")), NOW).ok
    md5 = authorized(v, DigestClient("alice", "wonderland", algorithms=("MD5",)))
    result = v.verify(md5, NOW)
    assert (result.outcome, result.status) == (AuthOutcome.NO_CREDENTIAL, 403)


def test_credential_lookup_receives_user_and_realm() -> None:
    seen: list[tuple[str, str]] = []

    def lookup(user: str, realm: str) -> Credential | None:
        seen.append((user, realm))
        return Credential(password="wonderland")

    v = verifier(credentials=lookup)
    assert v.verify(authorized(v, DigestClient("alice", "wonderland")), NOW).ok
    assert seen == [("alice", REALM)]


def test_auth_int_covers_the_body() -> None:
    v = verifier(qop=("auth-int",))
    request = authorized(v, DigestClient("alice", "wonderland"), request=invite(body=b"v=0\r\n"))
    assert v.verify(request, NOW).ok
    request.body = b"v=1\r\n"
    assert v.verify(request, NOW).outcome is AuthOutcome.WRONG_PASSWORD


def test_proxy_verifier_uses_407_and_proxy_headers() -> None:
    v = verifier(proxy=True)
    assert {name for name, _ in v.challenge_headers(NOW)} == {"Proxy-Authenticate"}
    assert v.verify(invite(), NOW).status == 407
    request = authorized(v, DigestClient("alice", "wonderland"))
    assert request.headers.get("Proxy-Authorization") is not None and request.headers.get("Authorization") is None
    assert v.verify(request, NOW).ok


def test_verifier_refuses_a_short_secret_and_unknown_algorithms() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        DigestVerifier(realm="r", secret=b"short", credentials=static_credentials({}))
    with pytest.raises(AuthError, match="not supported"):
        verifier(algorithms=("SHA-1",))


# ---- UAC ------------------------------------------------------------------------------------------------------------


def _response_with(*values: str, status: int = 401) -> Response:
    name = "WWW-Authenticate" if status == 401 else "Proxy-Authenticate"
    return make_response(invite(), status, to_tag="x", extra=[(name, v) for v in values])


def test_client_picks_the_strongest_algorithm_offered() -> None:
    response = _response_with(
        'Digest realm="r", nonce="1", algorithm=MD5', 'Digest realm="r", nonce="2", algorithm=SHA-256'
    )
    (chosen,) = DigestClient("u", "p").choose(response)
    assert chosen.algorithm == "SHA-256"
    response.headers.add("WWW-Authenticate", 'Digest realm="r", nonce="3", algorithm=SHA-512-256, qop="auth"')
    assert DigestClient("u", "p").choose(response)[0].algorithm == "SHA-512-256"


def test_client_without_a_usable_challenge_says_what_was_offered() -> None:
    response = _response_with('Digest realm="r", nonce="1", algorithm=SHA-1', "Basic realm=x")
    with pytest.raises(AuthError, match=r"offered: Digest SHA-1, Basic"):
        DigestClient("u", "p").choose(response)
    with pytest.raises(AuthError, match="no WWW-Authenticate header"):
        DigestClient("u", "p").choose(_response_with())


def test_client_answers_each_realm_once() -> None:
    response = _response_with('Digest realm="a", nonce="1"', 'Digest realm="b", nonce="2", algorithm=SHA-256')
    request = invite()
    auths = DigestClient("u", "p").authorize(request, response)
    assert sorted(a.challenge.realm for a in auths) == ["a", "b"]
    assert authorization_nonces(request) == set()
    for auth in auths:
        request.headers.add(auth.name, auth.value)
    assert authorization_nonces(request) == {"1", "2"}


def test_nonce_count_increases_per_nonce_and_restarts_for_a_new_nonce() -> None:
    client = DigestClient("u", "p", random_bytes=fixed_random)
    one = DigestChallenge("r", "nonce-1", qop=("auth",))
    two = DigestChallenge("r", "nonce-2", qop=("auth",))
    counts = [client.credentials(c, method="REGISTER", uri="sip:r").nc for c in (one, one, two, one)]
    assert counts == ["00000001", "00000002", "00000001", "00000003"]


def test_cnonce_is_fresh_for_every_request() -> None:
    client = DigestClient("u", "p")
    challenge = DigestChallenge("r", "n", qop=("auth",))
    a = client.credentials(challenge, method="REGISTER", uri="sip:r")
    b = client.credentials(challenge, method="REGISTER", uri="sip:r")
    assert a.cnonce and b.cnonce and a.cnonce != b.cnonce


def test_preemptive_credentials_reuse_the_last_challenge_with_the_next_nonce_count() -> None:
    client = DigestClient("u", "p")
    request = invite()
    assert client.preemptive(request) == []
    response = _response_with('Digest realm="r", nonce="n", qop="auth", algorithm=SHA-256')
    (first,) = client.authorize(request, response)
    (again,) = client.preemptive(request)
    assert "nc=00000001" in first.value and "nc=00000002" in again.value
    client.forget()
    assert client.preemptive(request) == []


def test_407_is_answered_with_proxy_authorization() -> None:
    response = _response_with('Digest realm="proxy", nonce="n", qop="auth"', status=407)
    (auth,) = DigestClient("u", "p").authorize(invite(), response)
    assert auth.name == "Proxy-Authorization"


def test_userhash_challenge_sends_the_hashed_username() -> None:
    challenge = DigestChallenge("r", "n", algorithm="SHA-256", qop=("auth",), userhash=True)
    creds = DigestClient("Jäsøn Doe", "p").credentials(challenge, method="GET", uri="/")
    assert creds.userhash and creds.username == hashlib.sha256("Jäsøn Doe:r".encode()).hexdigest()


def test_only_auth_int_offered_is_answered_with_auth_int() -> None:
    challenge = DigestChallenge("r", "n", qop=("auth-int",))
    assert DigestClient("u", "p").credentials(challenge, method="INVITE", uri="sip:x", body=b"v=0").qop == "auth-int"


def test_digest_response_refuses_an_unknown_qop() -> None:
    with pytest.raises(AuthError, match="qop"):
        digest_response("MD5", ha1="x", nonce="n", method="M", uri="u", qop="auth-conf", nc="00000001", cnonce="c")
