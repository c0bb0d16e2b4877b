"""Errors that reach the user as one line on stderr and exit code 2 (see cli.main)."""


class SslrtError(Exception):
    """Bad input: a missing, unreadable or invalid file, or a model that is not the paper's.

    The message is shown to the user as is, so it names what is wrong and where.
    """


class BackendUnavailable(SslrtError):
    """A backend that needs a package or device that is absent; the message says what to install."""


class InputWarning(UserWarning):
    """Something about an input the user should know (silent audio, ...), processed all the same.
    Subclasses name the input they concern, so caches can keep a warning with its input."""


class AudioInputWarning(InputWarning):
    """A warning about the audio of a pair."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name if it has none): what a one-line
    error shows of a library's multi-line error."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
