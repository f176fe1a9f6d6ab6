"""shopsync: one stock, many shops. The core, which knows no platform."""

__version__ = "0.1.0"
