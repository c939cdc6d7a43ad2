"""Code that runs in a user's app process: the loop around htag's renderer, what a page
may ask of it, and parano mode's keys. Nothing here imports the web stack: every module
an app process imports is memory each user pays for."""
