"""The DSO's agent: validates the aggregators' D-prognoses against its transformers."""
