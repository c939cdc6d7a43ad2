"""The development server: `python -m htagweb [target] [options]`.

    cli.py        the command line: options, one-line errors, uvicorn (with --reload)
    targets.py    "main:App", "main.py", "main", "main.App" → the app class, safely
    app.py        builds the Runner in the serving process (again after each reload)
    crosssite.py  refuses the requests another site's page makes the browser send
    folder.py     the built-in app that browses a folder and opens the htag apps in it
"""
