"""Market methods for the aggregator: clearing, payment rules and settlement (issue 6)."""
