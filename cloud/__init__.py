"""The aggregator platform (grows with the market and agents issues)."""
