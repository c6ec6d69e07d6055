"""S6: webhook signatures (the golden vector, shared with clients/js/test/webhooks.test.js; 1,000 mutated
deliveries, time window, rotation) and the address guard of deliveries (SSRF). Pure: no database."""

from __future__ import annotations

import hashlib
import hmac
import json
import random

import pytest

import pageq
from pageq.security.ssrf import check_url, parse_allow, refusal
from pageq.webhooks import SignatureError, new_secret, sign, verify

SECRET = "whsec_test_0123456789abcdefghijklmnop"
BODY = b'{"id":7,"type":"job.dead","job":{"id":42}}'
NOW = 1_800_000_000


def headers(body: bytes = BODY, secrets: tuple[str, ...] = (SECRET,), t: int = NOW) -> dict[str, str]:
    return {
        "Pageq-Signature": sign(body, secrets, t),
        "Pageq-Delivery": "99",
        "Content-Type": "application/json",
    }


def test_the_signature_is_hmac_sha256_of_time_dot_body() -> None:
    golden = "04f6b1d012f8d9ca0cc13e20e659cd3aeeb7d5c9b313c6d67865ad17a5d97b1c"
    assert hmac.new(SECRET.encode(), f"{NOW}.".encode() + BODY, hashlib.sha256).hexdigest() == golden
    assert sign(BODY, [SECRET], NOW) == f"t={NOW},v1={golden}"
    assert verify(headers(), BODY, SECRET, now=NOW) == json.loads(BODY)
    assert verify({"pageq-signature": headers()["Pageq-Signature"]}, BODY, SECRET, now=NOW)  # any case


def test_wrong_secrets_and_mutated_bodies_fail() -> None:
    signed = headers()
    with pytest.raises(SignatureError, match="no signature matches"):
        verify(signed, BODY, "whsec_wrong_0123456789abcdefghijkl", now=NOW)
    rng = random.Random(9)
    for _ in range(1000):  # every single-byte change of the body is caught
        mutated = bytearray(BODY)
        i = rng.randrange(len(mutated))
        mutated[i] = (mutated[i] + rng.randrange(1, 256)) % 256
        with pytest.raises(SignatureError):
            verify(signed, bytes(mutated), SECRET, now=NOW)


@pytest.mark.parametrize("skew", [-301, 301, -10_000])
def test_timestamps_outside_the_tolerance_fail(skew: int) -> None:
    with pytest.raises(SignatureError, match="more than 300 s away"):
        verify(headers(t=NOW + skew), BODY, SECRET, now=NOW)
    verify(headers(t=NOW + skew), BODY, SECRET, now=NOW, tolerance=abs(skew))


@pytest.mark.parametrize(
    "value",
    ["", "t=1", "v1=ab", f"t={NOW}", "t=abc,v1=00", f"t={NOW},t={NOW},v1=00", "garbage",
     "t=" + "9" * 13 + ",v1=0", f"t={NOW},v1=" + "a" * 2000, f"t={NOW},v1=\u00e9", "t=\u0661,v1=00"],
)  # fmt: skip
def test_missing_or_malformed_headers_fail(value: str) -> None:
    with pytest.raises(SignatureError):
        verify({"Pageq-Signature": value} if value else {}, BODY, SECRET, now=NOW)


def test_two_secrets_during_a_rotation() -> None:
    new = new_secret()
    both = headers(secrets=(new, SECRET))  # the sender signs with both while the old one lasts
    assert verify(both, BODY, SECRET, now=NOW) == verify(both, BODY, new, now=NOW)
    only_new = headers(secrets=(new,))
    assert verify(only_new, BODY, [SECRET, new], now=NOW)  # the receiver accepts either of its two
    with pytest.raises(SignatureError):
        verify(only_new, BODY, [SECRET], now=NOW)
    assert new.startswith("whsec_") and len(new) == 49 and new != new_secret()


def test_a_body_that_is_not_an_object_fails() -> None:
    with pytest.raises(SignatureError, match="not a JSON object"):
        verify(headers(body=b"[1]"), b"[1]", SECRET, now=NOW)


# ----- the address guard
@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"), ("::1", "loopback"), ("10.1.2.3", "private"), ("192.168.0.9", "private"),
        ("172.16.5.4", "private"), ("169.254.169.254", "link-local"), ("fe80::1%eth0", "link-local"),
        ("fd00:ec2::254", "private"), ("::ffff:127.0.0.1", "loopback"), ("::ffff:10.0.0.1", "private"),
        ("64:ff9b::a9fe:a9fe", "link-local"), ("2002:7f00:1::", "loopback"), ("0.0.0.0", "unspecified"),
        ("224.0.0.1", "multicast"), ("100.64.0.1", "not a global"), ("240.0.0.1", "private"),
    ],
)  # fmt: skip
def test_non_global_addresses_are_refused(address: str, kind: str) -> None:
    why = refusal(address)
    assert why is not None and kind in why


def test_global_addresses_and_the_allow_list_pass() -> None:
    for address in ("93.184.216.34", "8.8.8.8", "2606:4700:4700::1111"):
        assert refusal(address) is None
    allow = parse_allow("127.0.0.1, 10.0.0.0/8 fd00::/8")
    assert refusal("127.0.0.1", allow) is None and refusal("10.9.9.9", allow) is None
    assert refusal("::ffff:10.1.1.1", allow) is None and refusal("fd12::1", allow) is None
    assert refusal("127.0.0.2", allow) is not None and refusal("192.168.1.1", allow) is not None
    with pytest.raises(pageq.ConfigError):
        parse_allow("localhost")


@pytest.mark.parametrize(
    "url",
    ["ftp://example.com/", "https://", "https://u:p@example.com/", "http://example.com/#frag",
     "https://example.com:0/", "https://example.com:99999/", "http://exa mple.com/", "x" * 3000, 42],
)  # fmt: skip
def test_webhook_urls_are_checked(url: object) -> None:
    with pytest.raises(pageq.InvalidOptionError):
        check_url(url)
