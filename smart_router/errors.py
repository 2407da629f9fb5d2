"""How a command fails: one line on stderr, no traceback, and an exit code that says which way."""


class CommandFailed(Exception):
    """The command ran and its answer is a failure (an unknown job, a backend that is down, a
    file with nothing to send): exit 1. Could-not-run failures (NATS unreachable, a timeout,
    a bad argument) exit 2."""
