import os

from guarded_app import App

from htagweb import Runner

allowed = [o for o in os.environ.get("GUARDED_ALLOWED_ORIGINS", "").split(",") if o]
app = Runner(App, http_only=True, allowed_origins=allowed)
