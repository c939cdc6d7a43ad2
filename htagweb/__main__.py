"""`python -m htagweb`: the development server (see htagweb.devserver)."""

from .devserver.cli import main

raise SystemExit(main())
