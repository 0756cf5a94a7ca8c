"""Introspect a token with Authlib, an independent RFC 7662 client (client_secret_basic).

Usage: authlib_introspect.py URL CLIENT_ID CLIENT_SECRET TOKEN
Prints one JSON line: {"status": <HTTP status>, "body": <answer as JSON, or its text>}.
Run by tests/store/rfc7662.rs; install with: python3 -m pip install -r tests/rfc7662/requirements.txt
"""

import json
import sys

from authlib.integrations.requests_client import OAuth2Session


def main() -> None:
    url, client_id, client_secret, token = sys.argv[1:5]
    session = OAuth2Session(client_id, client_secret)
    resp = session.introspect_token(url, token=token, token_type_hint="access_token")
    try:
        body = resp.json()
    except ValueError:
        body = resp.text
    print(json.dumps({"status": resp.status_code, "body": body}))


if __name__ == "__main__":
    main()
