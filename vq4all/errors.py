"""The one exception type for input the user can fix.

Every error a user can cause (a bad file, a bad argument, a missing tool) is raised as
`VQ4AllError` with one line that says what was wrong, where, and what to do. The CLI prints
that line and exits with status 2; anything else is a bug and keeps its traceback.
"""


class VQ4AllError(Exception):
    """A problem with the user's input or environment, explained in one line."""


class ArtifactError(VQ4AllError, ValueError):
    """An artifact file broke a rule: the message names the file, the tensor and the rule."""

    def __init__(self, path, tensor, rule):
        self.path, self.tensor, self.rule = str(path), tensor, rule
        where = f"tensor '{tensor}'" if tensor else "header"
        super().__init__(f"{self.path}: {where}: {rule}")
