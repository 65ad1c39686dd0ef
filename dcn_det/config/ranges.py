"""Valid ranges of the schema's numeric fields, written into their annotations.

A field annotated ``PositiveInt`` is an ``int`` that the loader also checks against
``Range(lo=1)``; the annotation keeps the range next to the field it guards, and
``typing.get_type_hints(cls)`` (without ``include_extras``) still sees a plain ``int``. Every
``float`` must be finite; NaN and infinity are refused whatever the range.
"""
import math
from dataclasses import dataclass
from typing import Annotated, Optional


@dataclass(frozen=True)
class Range:
    """A closed or half-open interval; ``None`` bounds are unbounded.

    Attributes:
        lo, hi: the bounds.
        lo_open, hi_open: exclude the bound itself (``(0, 1]`` is ``Range(0, 1, lo_open=True)``).
    """

    lo: Optional[float] = None
    hi: Optional[float] = None
    lo_open: bool = False
    hi_open: bool = False

    def contains(self, value: float) -> bool:
        """True when ``value`` is finite and inside the interval."""
        if not math.isfinite(value):
            return False
        if self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo):
            return False
        if self.hi is not None and (value >= self.hi if self.hi_open else value > self.hi):
            return False
        return True

    def describe(self) -> str:
        """The interval in words, e.g. ``">= 1"``, ``"> 0"`` or ``"in [0, 1)"``."""
        if self.lo is not None and self.hi is not None:
            return (f"in {'(' if self.lo_open else '['}{_num(self.lo)}, {_num(self.hi)}"
                    f"{')' if self.hi_open else ']'}")
        if self.lo is not None:
            return f"{'>' if self.lo_open else '>='} {_num(self.lo)}"
        if self.hi is not None:
            return f"{'<' if self.hi_open else '<='} {_num(self.hi)}"
        return "a finite number"


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def range_of(annotation) -> Optional[Range]:
    """The :class:`Range` of an ``Annotated[...]`` annotation, or None."""
    for meta in getattr(annotation, "__metadata__", ()):
        if isinstance(meta, Range):
            return meta
    return None


PositiveInt = Annotated[int, Range(lo=1)]
NonNegInt = Annotated[int, Range(lo=0)]
PositiveFloat = Annotated[float, Range(lo=0, lo_open=True)]
NonNegFloat = Annotated[float, Range(lo=0)]
FiniteFloat = Annotated[float, Range()]
# Probabilities, IoU thresholds and other fractions.
Fraction = Annotated[float, Range(lo=0, hi=1)]
# Decay rates such as momentum and Adam's betas: 1 would never forget.
DecayRate = Annotated[float, Range(lo=0, hi=1, hi_open=True)]
# Factors that scale something down but must leave some of it (0 would erase it).
PositiveFraction = Annotated[float, Range(lo=0, hi=1, lo_open=True)]
