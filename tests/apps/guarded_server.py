import os

from guarded_app import App

from htagweb import Runner

allowed = [o for o in os.environ.get("GUARDED_ALLOWED_ORIGINS", "").split(",") if o]
rate = float(os.environ.get("GUARDED_RATE", "200"))
app = Runner(App, http_only=True, allowed_origins=allowed, interactions_per_second=rate)
