"""One exception type for every user-facing problem.

Anything raised as :class:`PqdError` is printed by the CLI as a single line
``pqd: error: ...`` naming the problem and the fix, never as a traceback.
"""


class PqdError(Exception):
    """A problem the user can fix (bad config, missing data, corrupt checkpoint...)."""
