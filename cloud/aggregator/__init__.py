"""The aggregator's agent: rounds with its homes, offers to and orders from the DSO."""
