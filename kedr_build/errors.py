"""Errors that reach the user as one line, never as a traceback."""


class KedrError(Exception):
    """A failure caused by the input or the environment.

    The message is one line that names the file (or the tool) and the cause;
    the CLI and the SCons tools print it as ``kedr-build: <message>`` and exit 1.
    """
