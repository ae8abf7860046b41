"""`timm-groupoct` command line: each subcommand is a thin layer over the library."""
import argparse
import sys
from typing import List, Optional

from . import convert, eval, experiment, export, info, list_cmd, predict, timm_script, train
from ._common import CLIError

SUBCOMMANDS = (list_cmd, info, train, eval, predict, export, convert, experiment, timm_script)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='timm-groupoct', description='Grouped-conv, GroupNorm and Octave-conv models for timm.')
    sub = parser.add_subparsers(dest='command', required=True, metavar='COMMAND')
    for cmd in SUBCOMMANDS:
        cmd.add_parser(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args) or 0
    except CLIError as e:
        print(f'{parser.prog} {args.command}: error: {e}', file=sys.stderr)
        return e.exit_status


if __name__ == '__main__':
    sys.exit(main())
