"""What both portals share: the wire protocol, the algorithm runtime, data loading and outputs."""

__version__ = "0.1.0"
