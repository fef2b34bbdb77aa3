"""The error type for problems the user can fix; the CLI prints these as one line."""


class UserError(ValueError):
    """Bad input: a missing file, a malformed row, an unknown option. The message says what to do."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a command that can be continued; the message says how (the CLI prints it)."""
