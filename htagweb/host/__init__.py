"""Code that runs in the host's own processes: the supervisor, which owns every app
process of one server, and the warm templates it forks them from."""
