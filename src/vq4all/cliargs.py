"""Argument parsing of the `vq4all` CLI: every numeric flag is read and range-checked by its
argparse `type=`, so a bad value ends in one line naming the flag and the allowed range, before
any file is read or any memory allocated; and argparse's own errors are one line too.

    p.add_argument("--seed", type=int_in(0, MAX_SEED))
    $ vq4all compress ... --seed -1
    vq4all compress: error: --seed -1: must be an integer in 0..4294967295 (see vq4all compress --help)

No value makes a type raise anything but `argparse.ArgumentTypeError`: NaN, infinities, "1e400"
and numerals of thousands of digits (which `int()` itself refuses past 4300) are all refused
with the same kind of line.
"""

from __future__ import annotations

import argparse
import math
import re
import sys

from .errors import printable
from .rules import BANDWIDTH_RULES, is_power_of_two

SHOWN_CHARS = 24  # how much of a refused value the error line repeats
MAX_DIGITS = 30  # a longer numeral is out of every range: refused without converting it
_INTEGER = re.compile(r"[+-]?[0-9]+")
_OWN = re.compile(r"argument (\S+): (.*)", re.DOTALL)


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line errors: `vq4all <sub>: error: <message> (see vq4all <sub> --help)`,
    exit status 2. Subparsers made by `add_subparsers` are of this class too."""

    def error(self, message: str):
        own = _OWN.fullmatch(message)
        if own:  # "argument --seed: -1: must be ..." -> "--seed -1: must be ..."
            flag, rest = own.groups()
            message = f"{flag} {rest}" if rest.startswith("\0") else f"{flag}: {rest}"
        message = printable(message.replace("\0", ""), 600)
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def exit(self, status: int = 0, message: str | None = None):
        if message:
            sys.stderr.write(message)
        raise SystemExit(status)


def _refuse(text: str, rule: str) -> argparse.ArgumentTypeError:
    # the leading NUL marks a message of these types: ArgumentParser.error writes "FLAG VALUE: rule"
    return argparse.ArgumentTypeError(f"\0{printable(text.strip(), SHOWN_CHARS) or repr(text)}: must be {rule}")


def int_in(lo: int, hi: int, *, power_of_two: bool = False):
    """An argparse type: an integer in lo..hi (with `power_of_two`, a power of two in lo..hi)."""
    rule = f"{'a power of two' if power_of_two else 'an integer'} in {lo}..{hi}"

    def parse(text: str) -> int:
        numeral = text.strip().replace("_", "")
        if not _INTEGER.fullmatch(numeral):
            raise _refuse(text, rule)
        if len(numeral.lstrip("+-").lstrip("0")) > MAX_DIGITS:  # beyond any range (and int()'s limit)
            raise _refuse(text, rule)
        value = int(numeral)
        if not lo <= value <= hi or (power_of_two and not is_power_of_two(value)):
            raise _refuse(text, rule)
        return value

    parse.__name__ = "integer"
    parse.rule = rule
    return parse


def power_of_two(lo: int, hi: int):
    """An argparse type: a power of two in lo..hi."""
    return int_in(lo, hi, power_of_two=True)


def float_in(lo: float = -math.inf, hi: float = math.inf, *, lo_open: bool = False, hi_open: bool = False):
    """An argparse type: a finite number in the interval from lo to hi, each end closed unless
    `lo_open` / `hi_open` (an infinite end is only there to leave the side unbounded)."""
    if math.isinf(hi):
        rule = f"a finite number {'>' if lo_open else '>='} {lo:g}"
    else:
        rule = f"a number in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise _refuse(text, rule) from None
        if not math.isfinite(value):
            raise _refuse(text, rule)
        if value < lo or (lo_open and value == lo) or value > hi or (hi_open and value == hi):
            raise _refuse(text, rule)
        return value

    parse.__name__ = "number"
    parse.rule = rule
    return parse


def bandwidth(text: str) -> str | float:
    """An argparse type: a KDE bandwidth rule (scott, silverman) or a fixed positive h."""
    if text in BANDWIDTH_RULES:
        return text
    rule = f"{', '.join(BANDWIDTH_RULES)} or a positive finite number"
    try:
        value = float(text)
    except ValueError:
        raise _refuse(text, rule) from None
    if not (math.isfinite(value) and value > 0):
        raise _refuse(text, rule)
    return value
