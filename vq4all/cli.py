"""The `vq4all` console script (filled in below)."""
def main(argv=None):
    return 0
