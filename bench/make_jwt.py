#!/usr/bin/env python3
"""An ES256 key pair and a token signed with it, for the auth benchmarks (openssl does the crypto).
Usage: make_jwt.py DIR  -> writes DIR/ec.pem (private), DIR/ec.pub.pem, prints the token."""
import base64, json, subprocess, sys, time

def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

def der_to_raw(der: bytes) -> bytes:
    # SEQUENCE { INTEGER r, INTEGER s } -> r || s, 32 bytes each
    assert der[0] == 0x30
    i = 2 if der[1] < 0x80 else 3
    out = b""
    for _ in range(2):
        assert der[i] == 0x02
        length = der[i + 1]
        value = der[i + 2:i + 2 + length].lstrip(b"\0")
        out += value.rjust(32, b"\0")
        i += 2 + length
    return out

directory = sys.argv[1]
subprocess.run(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", f"{directory}/ec.pem"], check=True)
subprocess.run(["openssl", "ec", "-in", f"{directory}/ec.pem", "-pubout", "-out", f"{directory}/ec.pub.pem"],
               check=True, stderr=subprocess.DEVNULL)
header = b64(json.dumps({"alg": "ES256", "kid": "bench", "typ": "JWT"}).encode())
payload = b64(json.dumps({"sub": "bench", "iss": "https://bench", "exp": int(time.time()) + 86400}).encode())
signing_input = f"{header}.{payload}".encode()
der = subprocess.run(["openssl", "dgst", "-sha256", "-sign", f"{directory}/ec.pem"], input=signing_input,
                     check=True, capture_output=True).stdout
print(f"{header}.{payload}.{b64(der_to_raw(der))}")
