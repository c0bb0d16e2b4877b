"""Errors that reach the user as one line on stderr and exit code 2 (see cli.main)."""


class SslrtError(Exception):
    """Bad input: a missing, unreadable or invalid file, or a model that is not the paper's.

    The message is shown to the user as is, so it names what is wrong and where.
    """


class BackendUnavailable(SslrtError):
    """A backend that needs a package or device that is absent; the message says what to install."""
