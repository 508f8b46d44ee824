"""The one exception type for problems a user can fix (bad input, missing data, environment)."""


class HarnessError(Exception):
    """A user-facing error: the message names the file or setting and says what to do.

    The CLI prints it without a traceback and exits with status 2.
    """


class EngineFault(HarnessError):
    """The engine under test misbehaved: it raised, returned NaN/Inf, or a wrong shape. Not a user error:
    a FAIL of that engine (the gate's row says what it did; the CLI exits 1, not 2)."""
