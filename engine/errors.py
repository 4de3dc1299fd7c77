"""The mistakes a user can cause, one family: the CLI and the app catch `UserError` and show its message
in one line (exit status 2 on the command line); anything else is a bug and keeps its traceback."""


class UserError(ValueError):
    """Something the user can fix; the message names what is wrong (file, row, column, key, value)."""


class ConfigError(UserError):
    """A bad preset or config value; the message names the key and the accepted values."""


class DataError(UserError):
    """Bad market data; the message names the file, the row(s) and the column."""


class RunError(UserError):
    """An output folder that can't be written, or a run or checkpoint that can't be read; the message says which."""
