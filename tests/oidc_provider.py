"""A tiny OpenID Connect provider for the tests: one client, one user, no internet.

    python tests/oidc_provider.py --port 9000 --client-id app --client-secret s3cret

It auto-approves every authorization request (no login form) for the user below, and
signs its id_tokens (RS256) with a key made at start-up: nothing is written to disk.
Authorization codes are single use and checked against client, redirect_uri and PKCE.
uvicorn logs "Application startup complete" once it listens.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import secrets
import time
from typing import Any
from urllib.parse import parse_qsl, urlencode

import uvicorn
from joserfc import jwt
from joserfc.jwk import RSAKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

USER = {"sub": "alice", "name": "Alice", "email": "alice@example.org", "email_verified": True}
TOKEN_LIFETIME = 300


def create_app(issuer: str, client_id: str, client_secret: str) -> Starlette:
    issuer = issuer.rstrip("/")
    key = RSAKey.generate_key(2048, parameters={"kid": "test-key", "use": "sig", "alg": "RS256"})
    codes: dict[str, dict[str, Any]] = {}  # authorization code -> what /authorize was asked
    access_tokens: dict[str, dict[str, Any]] = {}  # access token -> userinfo claims

    def token_error(error: str, status: int = 400) -> JSONResponse:
        return JSONResponse({"error": error}, status, headers={"Cache-Control": "no-store"})

    async def configuration(request: Request) -> Response:
        return JSONResponse(
            {
                "issuer": issuer,
                "authorization_endpoint": f"{issuer}/authorize",
                "token_endpoint": f"{issuer}/token",
                "userinfo_endpoint": f"{issuer}/userinfo",
                "jwks_uri": f"{issuer}/jwks",
                "response_types_supported": ["code"],
                "grant_types_supported": ["authorization_code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "scopes_supported": ["openid", "email", "profile"],
                "token_endpoint_auth_methods_supported": [
                    "client_secret_basic",
                    "client_secret_post",
                ],
                "code_challenge_methods_supported": ["S256"],
            }
        )

    async def authorize(request: Request) -> Response:
        query = request.query_params
        redirect_uri = query.get("redirect_uri")
        if query.get("client_id") != client_id or not redirect_uri:
            # never redirect to an unchecked address: say it here instead
            return PlainTextResponse("unknown client or no redirect_uri", 400)
        if query.get("response_type") != "code" or "openid" not in query.get("scope", "").split():
            error = {"error": "invalid_request", "state": query.get("state", "")}
            return RedirectResponse(f"{redirect_uri}?{urlencode(error)}", 302)
        code = secrets.token_urlsafe(24)
        codes[code] = {
            "redirect_uri": redirect_uri,
            "nonce": query.get("nonce"),
            "code_challenge": query.get("code_challenge"),
            "code_challenge_method": query.get("code_challenge_method", "plain"),
        }
        answer = {"code": code}
        if "state" in query:
            answer["state"] = query["state"]
        return RedirectResponse(f"{redirect_uri}?{urlencode(answer)}", 302)

    def client_credentials(request: Request, form: dict[str, str]) -> tuple[str | None, str | None]:
        """client_secret_basic (an Authorization header) or client_secret_post (the form)."""
        scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "basic":
            try:
                decoded = base64.b64decode(encoded, validate=True).decode()
            except ValueError:
                return None, None
            name, _, secret = decoded.partition(":")
            return name, secret  # (authlib does not form-encode them first; the tests' are plain)
        return form.get("client_id"), form.get("client_secret")

    async def token(request: Request) -> Response:
        form = dict(parse_qsl((await request.body()).decode()))  # x-www-form-urlencoded
        name, secret = client_credentials(request, form)
        given = (secret or "").encode()
        if name != client_id or not secrets.compare_digest(given, client_secret.encode()):
            return token_error("invalid_client", 401)
        if form.get("grant_type") != "authorization_code":
            return token_error("unsupported_grant_type")
        grant = codes.pop(form.get("code", ""), None)  # single use
        if grant is None or grant["redirect_uri"] != form.get("redirect_uri"):
            return token_error("invalid_grant")
        if grant["code_challenge"] is not None:
            verifier = form.get("code_verifier", "")
            if grant["code_challenge_method"] == "S256":
                digest = hashlib.sha256(verifier.encode()).digest()
                verifier = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
            if not secrets.compare_digest(verifier, grant["code_challenge"]):
                return token_error("invalid_grant")
        now = int(time.time())
        claims = {
            "iss": issuer,
            "aud": client_id,
            "iat": now,
            "exp": now + TOKEN_LIFETIME,
            **USER,
        }
        if grant["nonce"] is not None:
            claims["nonce"] = grant["nonce"]
        access_token = secrets.token_urlsafe(24)
        access_tokens[access_token] = USER
        id_token = jwt.encode({"alg": "RS256", "kid": key.kid}, claims, key)
        return JSONResponse(
            {
                "access_token": access_token,
                "token_type": "Bearer",
                "expires_in": TOKEN_LIFETIME,
                "id_token": id_token,
                "scope": "openid email profile",
            },
            headers={"Cache-Control": "no-store"},
        )

    async def jwks(request: Request) -> Response:
        return JSONResponse({"keys": [key.as_dict(private=False)]})

    async def userinfo(request: Request) -> Response:
        scheme, _, presented = request.headers.get("authorization", "").partition(" ")
        claims = access_tokens.get(presented) if scheme.lower() == "bearer" else None
        if claims is None:
            return JSONResponse({"error": "invalid_token"}, 401)
        return JSONResponse(claims)

    return Starlette(
        routes=[
            Route("/.well-known/openid-configuration", configuration),
            Route("/authorize", authorize),
            Route("/token", token, methods=["POST"]),
            Route("/jwks", jwks),
            Route("/userinfo", userinfo),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--client-id", required=True)
    parser.add_argument("--client-secret", required=True)
    args = parser.parse_args()
    issuer = f"http://{args.host}:{args.port}"
    app = create_app(issuer, args.client_id, args.client_secret)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")


if __name__ == "__main__":
    main()
