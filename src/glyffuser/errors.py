"""One exception type for every user-facing failure.

Stages raise `GlyffuserError` with a sentence a user can act on; the CLI prints it as one line
and exits non-zero. Anything else escaping is a bug and keeps its traceback.
"""


class GlyffuserError(Exception):
    """A failure caused by input, parameters or environment, explained in one sentence."""
