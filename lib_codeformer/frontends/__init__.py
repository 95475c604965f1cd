"""The ways in: the command line, the HTTP route, the WebUI runtime and its controls.

Front ends import everything below them; nothing below imports a front end.
"""
