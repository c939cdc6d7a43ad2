"""An app process's view of its user's session, read and saved around the app's code."""

from __future__ import annotations

import logging

from ..sessions import SessionError, SessionStore, open_store
from ..sessions.views import AppSession
from ..wire.messages import SessionRef

logger = logging.getLogger(__name__)


class SessionLink:
    """The session of the user this process serves, over one store connection of its own
    (opened after the fork: connections are never shared between processes)."""

    def __init__(self) -> None:
        self.store: SessionStore | None = None
        self.session: AppSession | None = None

    def open(self, described: SessionRef) -> AppSession:
        if self.session is None or self.session.session_id != described["id"]:
            if self.store is None:
                self.store = open_store(described["store"])
            self.session = AppSession(self.store, described["id"])
        return self.session

    def refresh(self) -> None:
        """See what the web side (request.session) wrote since the app last looked."""
        if self.session is not None:
            self.session.refresh()

    def save(self) -> str | None:
        """Save what the app changed in place; why it could not, if so (logged)."""
        if self.session is None:
            return None
        try:
            self.session.save_changes()
        except (TypeError, SessionError) as exc:
            logger.error("the app's session could not be saved: %s", exc)
            return f"The session could not be saved: {exc}"
        return None
