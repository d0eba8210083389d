"""The local stack: every part of the platform on one machine, no containers."""

from extract.localstack.home import StackHome
from extract.localstack.parts import PARTS, Part
from extract.localstack.stack import PortTaken, Stack

__all__ = ["PARTS", "Part", "PortTaken", "Stack", "StackHome"]
