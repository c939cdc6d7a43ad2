"""Log in with any OpenID Connect provider (Google, Keycloak, Auth0, ...) through authlib.

    pip install 'htagweb[oauth]'          # authlib and httpx

Register a web client at your provider with this redirect URI:

    http://localhost:8000/auth

(Google: APIs & Services > Credentials > OAuth client ID > Web application. Keycloak: a
confidential OpenID Connect client in your realm, "Valid redirect URIs".) Then:

    export OIDC_SERVER_METADATA_URL=https://accounts.google.com/.well-known/openid-configuration
    # Keycloak: https://KEYCLOAK/realms/REALM/.well-known/openid-configuration
    export OIDC_CLIENT_ID=...  OIDC_CLIENT_SECRET=...
    export OIDC_SCOPE="openid email profile"      # optional, this is the default
    python examples/oauth_example.py              then open http://localhost:8000

Open it as "localhost" (the host you registered): the redirect URI is built from the
address the browser used. HTAGWEB_PORT / HTAGWEB_HOST change where it listens.

/login sends the browser to the provider, which sends it back to /auth with a code;
/auth trades the code for tokens (checking the id_token's signature, issuer, audience
and nonce), keeps the user in the session and rotates the session id, so a session
cookie obtained before logging in is worth nothing after. The htag app reads the same
session as `self.session`. The page's "Log out" button POSTs to /logout, which forgets
the user (here only, not at the provider) and rotates the session id again. Any site's
page can make the browser send a GET (an <img>, a link): logging out is a POST, and
one whose Origin (or Referer) names another site is refused.
"""

import html
import logging
import os

import httpx
from authlib.integrations.starlette_client import OAuth, OAuthError
from htag import Tag
from starlette.responses import HTMLResponse, RedirectResponse

from htagweb import Runner, rotate_session
from htagweb.web.guard import origin_refusal

logger = logging.getLogger("oauth_example")

oauth = OAuth()
oauth.register(
    "oidc",
    server_metadata_url=os.environ.get("OIDC_SERVER_METADATA_URL"),
    client_id=os.environ.get("OIDC_CLIENT_ID"),
    client_secret=os.environ.get("OIDC_CLIENT_SECRET"),
    client_kwargs={
        "scope": os.environ.get("OIDC_SCOPE", "openid email profile"),
        "code_challenge_method": "S256",  # PKCE, on top of the client secret
    },
)


class App(Tag.div):
    def init(self):
        user = self.session.get("user")
        if user:
            self += Tag.span(f"Hello {html.escape(user['name'])}", _class="hello")
            # a form, not a link: logging out changes the session, so it is a POST
            logout = Tag.button("Log out", _type="submit", _class="logout")
            self += Tag.form(logout, _method="post", _action="/logout")
        else:
            self += Tag.a("Log in", _href="/login", _class="login")
        self += Tag.button("Who am I?", _class="whoami", _onclick=self.whoami)
        self.answer = Tag.span(_class="email")
        self += self.answer

    def whoami(self, event):
        # read in this app's own process: the session the web routes wrote
        user = self.session.get("user")
        self.answer.clear(html.escape(user["email"]) if user else "not logged in")


def failed(message: str, status: int) -> HTMLResponse:
    return HTMLResponse(
        f'<p class="error">Login failed: {html.escape(message)}</p><a href="/">Back</a>', status
    )


async def login(request):
    return await oauth.oidc.authorize_redirect(request, request.url_for("auth"))


async def auth(request):
    try:
        token = await oauth.oidc.authorize_access_token(request)
        userinfo = token.get("userinfo") or await oauth.oidc.userinfo(token=token)
    except OAuthError as exc:
        logger.warning("login failed: %s", exc)
        return failed(exc.error or "refused by the identity provider", 401)
    except httpx.HTTPError as exc:
        logger.warning("login failed: %r", exc)
        return failed("no valid answer from the identity provider", 502)
    email = userinfo.get("email") or ""
    request.session["user"] = {
        "name": userinfo.get("name") or email or userinfo["sub"],
        "email": email,
        "sub": userinfo["sub"],
    }
    rotate_session(request)  # a new session cookie: the pre-login one stops working
    return RedirectResponse("/", 303)


async def logout(request):
    # The session cookie is SameSite=Lax: browsers leave it out of other sites' POSTs.
    # Checking Origin too also refuses pages of the same site on another host or port.
    refused = origin_refusal(request.headers, frozenset())
    if refused:
        logger.warning("logout refused: %s", refused)
        return HTMLResponse('<p class="error">Logout refused</p><a href="/">Back</a>', 403)
    request.session.pop("user", None)
    rotate_session(request)  # a new session cookie again, after removing the user
    return RedirectResponse("/", 303)


app = Runner(App)
app.add_route("/login", login)
app.add_route("/auth", auth)
app.add_route("/logout", logout, methods=["POST"])  # GET /logout: 405

if __name__ == "__main__":
    required = ("OIDC_SERVER_METADATA_URL", "OIDC_CLIENT_ID", "OIDC_CLIENT_SECRET")
    missing = [name for name in required if not os.environ.get(name)]
    if missing:
        raise SystemExit(f"set {', '.join(missing)}: see the top of {__file__}")
    app.run()
