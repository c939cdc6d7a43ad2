"""Sessions: the signed cookie that names a user's session (stores come with it)."""
