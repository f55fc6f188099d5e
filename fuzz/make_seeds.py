#!/usr/bin/env python3
"""Writes the seed corpora of fuzz/corpus/ (run from anywhere; needs `cryptography`).

The tokens are real signatures with the keys the `jws` target trusts: Ed25519 seeds
[1]*32 (kid "k1") and [2]*32 (no kid), and the emulator's test-only RSA keys
src/emulator/keys/rsa2048-1.pk8 (kid 298817363741638659) and rsa2048-2.pk8. The key sets
are those keys as JWKS documents, as the emulator publishes them (the app-token set with
Zitadel's EC and OKP keys beside the RSA ones). The configs are config/*.toml.
"""

import base64
import json
import pathlib
import shutil

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding

FUZZ = pathlib.Path(__file__).resolve().parent
ROOT = FUZZ.parent
CORPUS = FUZZ / "corpus"
NOW = 1_790_000_000
ISSUER = "https://id.jtl-cloud.com"
APP_ID = "312909075212468632"
RSA_KID = "298817363741638659"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def compact(value) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def signing_input(header, claims) -> str:
    return f"{b64(compact(header))}.{b64(compact(claims))}"


def ed25519_key(seed_byte: int) -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.from_private_bytes(bytes([seed_byte]) * 32)


def rsa_key(name: str):
    der = (ROOT / "src/emulator/keys" / name).read_bytes()
    return serialization.load_der_private_key(der, password=None)


def ed_token(key, header, claims) -> str:
    text = signing_input(header, claims)
    return f"{text}.{b64(key.sign(text.encode()))}"


def rs_token(key, header, claims) -> str:
    text = signing_input(header, claims)
    signature = key.sign(text.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{text}.{b64(signature)}"


def ed_jwk(key, kid=None):
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    jwk = {"kty": "OKP", "crv": "Ed25519", "use": "sig", "alg": "EdDSA", "x": b64(raw)}
    if kid:
        jwk["kid"] = kid
    return jwk


def rsa_jwk(key, kid):
    numbers = key.public_key().public_numbers()
    n = numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")
    e = numbers.e.to_bytes((numbers.e.bit_length() + 7) // 8, "big")
    return {"use": "sig", "kty": "RSA", "kid": kid, "alg": "RS256", "n": b64(n), "e": b64(e)}


def write(target: str, name: str, data) -> None:
    directory = CORPUS / target
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_bytes(data if isinstance(data, bytes) else data.encode())


def main() -> None:
    first, second = ed25519_key(1), ed25519_key(2)
    rsa1, rsa2 = rsa_key("rsa2048-1.pk8"), rsa_key("rsa2048-2.pk8")
    session = {
        "exp": NOW + 300, "iat": NOW - 5, "kid": "customer-4711",
        "userId": "2f1b8d2c-5c1e-4a7e-9b3f-1d2e3f4a5b6c",
        "tenantId": "7c9e6679-7425-40de-944b-e07fc1f90ae7", "tenantSlug": "acme-gmbh",
    }
    app = {
        "iss": ISSUER, "sub": "312909075212468999", "aud": [APP_ID, "312909075212460000"],
        "urn:jtl:tenant_id": "7C9E6679-7425-40DE-944B-E07FC1F90AE7",
        "urn:jtl:app_id": APP_ID, "iat": NOW - 10, "exp": NOW + 300,
    }
    ed_header = {"alg": "EdDSA", "typ": "JWT"}
    rs_header = {"alg": "RS256", "typ": "JWT", "kid": RSA_KID}

    write("jws", "session-token", ed_token(second, ed_header, session))
    write("jws", "session-token-kid", ed_token(first, {**ed_header, "kid": "k1"}, session))
    write("jws", "session-token-expired", ed_token(second, ed_header, {**session, "exp": NOW - 60}))
    write("jws", "app-token", rs_token(rsa1, rs_header, app))
    write("jws", "app-token-other-key", rs_token(rsa2, {**rs_header, "kid": "other"}, app))
    write("jws", "app-token-no-kid", rs_token(rsa1, {"alg": "RS256", "typ": "JWT"}, app))
    write("jws", "alg-none", signing_input({"alg": "none"}, session) + ".")
    duplicate = b64(b'{"alg":"EdDSA","alg":"none"}') + "." + b64(compact(session)) + "." + "A" * 86
    write("jws", "duplicate-header-key", duplicate)

    write("jwks", "session-keys.json", compact({"keys": [ed_jwk(first, "k1"), ed_jwk(second)]}))
    p256 = ec.derive_private_key(7, ec.SECP256R1()).public_key().public_numbers()
    mixed = {"keys": [
        rsa_jwk(rsa1, RSA_KID),
        {"use": "sig", "kty": "EC", "kid": "312909097518390680", "crv": "P-256", "alg": "ES256",
         "x": b64(p256.x.to_bytes(32, "big")), "y": b64(p256.y.to_bytes(32, "big"))},
        {**ed_jwk(first, "312909097518456216")},
        rsa_jwk(rsa2, "other"),
    ]}
    write("jwks", "zitadel-mixed.json", compact(mixed))
    small = rsa_jwk(rsa_key("rsa1024.pk8"), "small")
    write("jwks", "small-rsa-and-duplicate-kid.json",
          compact({"keys": [small, rsa_jwk(rsa1, "k"), rsa_jwk(rsa2, "k"), ed_jwk(second, "k")]}))
    write("jwks", "empty.json", b'{"keys":[]}')

    (CORPUS / "config").mkdir(parents=True, exist_ok=True)
    for name in ["example.toml", "minimal.toml", "dev.toml", "dev-session-token.toml", "dev-both.toml"]:
        shutil.copy(ROOT / "config" / name, CORPUS / "config" / name)
    write("config", "minimal-with-env",
          (ROOT / "config/minimal.toml").read_text() + "\0"
          "JTL_SIDECAR_JTL__CLIENT_SECRET=007\n"
          "INGRESS__PUBLIC_PATHS=[\"/health\", \"/static/*\"]\n"
          "TENANTS__DATABASE_URL=postgres://app:s3cret@db:5432/tenants?password=x\n"
          "SHARED_CACHE__REDIS_URL=rediss://:pw@redis:6380/0\n")

    write("headers", "spoofed-identity",
          "/orders?page=2\nX-JTL-Customer-ID\n"
          "x-tenant-id:spoofed\nX_Tenant_ID:spoofed\nx_user-id:spoofed\nx-tenant-slug:s\n"
          "x-jtl-customer-id:c\nx-other:stays\n")
    write("headers", "hop-by-hop",
          "/public/app.js\n\n"
          "connection:close, X-Secret, Host, Content-Length\nx-secret:1\nkeep-alive:timeout=5\n"
          "te:trailers\nproxy-authorization:Basic x\nupgrade:websocket\nhttp2-settings:AAMA\n"
          "x_forwarded_for:1.2.3.4\nx-forwarded-for:5.6.7.8\nhost:a\ncontent-length:0\n")
    write("headers", "dot-segments", "/public/%2e%2E/secret;x\n\nx-request-id:r\n")
    write("headers", "encoded-slash", "/public/a%2Fb\\c/..;/health\n\n")
    write("headers", "routing-overrides",
          "/public/%252e%252e/admin\n\n"
          "x-original-url:/admin\nX_Rewrite_URL:/admin\nTransfer_Encoding:chunked\n"
          "Content_Length:5\nX_Real_IP:1.2.3.4\nx-real-ip:1.2.3.4\nx_other:stays\n")
    write("headers", "u-escape", "/public/%u002e%u002e/admin\n\n")


if __name__ == "__main__":
    main()
