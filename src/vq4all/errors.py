"""The one exception type for input the user can fix.

Every error a user can cause (a bad file, a bad argument, a missing tool) is raised as
`VQ4AllError` with one line that says what was wrong, where, and what to do. The CLI prints
that line and exits with status 2; anything else is a bug and keeps its traceback.
"""


class VQ4AllError(Exception):
    """A problem with the user's input or environment, explained in one line."""


MAX_NAME_CHARS = 200  # a hostile file may name a tensor with megabytes of text


def printable(text, limit: int = 0) -> str:
    """`text` safe to print as part of one line: control characters, line breaks and lone
    surrogates (all possible in a file's JSON header) escaped, and cut to `limit` characters."""
    text = str(text)
    if not text.isprintable():
        text = "".join(
            c if c.isprintable() else c.encode("unicode_escape", "backslashreplace").decode("ascii") for c in text
        )
    if limit and len(text) > limit:
        text = text[:limit] + f"...({len(text) - limit} more characters)"
    return text


class ArtifactError(VQ4AllError, ValueError):
    """An artifact file broke a rule: the message names the file, the tensor and the rule.

    The message is always one printable line: names and rules come from untrusted headers, so
    they are escaped and shortened here (the attributes keep the raw values)."""

    def __init__(self, path, tensor, rule):
        self.path, self.tensor, self.rule = str(path), tensor, rule
        where = f"tensor '{printable(tensor, MAX_NAME_CHARS)}'" if tensor else "header"
        super().__init__(f"{printable(self.path)}: {where}: {printable(rule, 4 * MAX_NAME_CHARS)}")
