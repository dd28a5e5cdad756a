"""The web console: static pages served on the API's TCP listener at ``/ui/``.

``web.py`` serves the pages and the login; ``sessions.py`` holds sessions,
CSRF tokens and the login rate limit; ``static/`` is the front end (plain
HTML, vanilla JavaScript modules and CSS, no build step). The pages use only
the public ``/v1`` API.
"""
