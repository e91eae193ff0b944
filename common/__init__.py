"""Homeflex: the Energy Box gateway (`homeflex.edge`) and the aggregator platform
(`homeflex.cloud`); this package holds what both share: command line, clock, config loader."""

__version__ = "0.1.0"
