"""SPADE agents and their message envelopes (grows with the agents issue)."""
