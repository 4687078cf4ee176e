"""The `igsearch` command line (placeholder until the subcommands land)."""
import sys
def main(argv=None):
    print("igsearch: no subcommands yet", file=sys.stderr)
    return 2
