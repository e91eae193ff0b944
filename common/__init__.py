"""Homeflex: the Energy Box gateway (`homeflex.edge`) and the aggregator platform (`homeflex.cloud`)."""

__version__ = "0.1.0"
