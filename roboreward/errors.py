"""The one error type the CLI turns into a one-line message (no traceback).

Library code raises a subclass with a message that names the problem and the fix; anything else
reaching the CLI is a bug and keeps its traceback.
"""


class RoborewardError(ValueError):
    """Bad input (dataset, config, checkpoint, argument): the message is one line, problem and fix."""
