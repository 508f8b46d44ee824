"""The one exception type for problems a user can fix (bad input, missing data, environment)."""


class HarnessError(Exception):
    """A user-facing error: the message names the file or setting and says what to do.

    The CLI prints it without a traceback and exits with status 2.
    """
