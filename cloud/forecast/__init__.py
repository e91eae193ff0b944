"""The forecasting service: PV and household load per PTU for the sites it knows, to the homes
and aggregators that ask (seed 003's forecasting engine, here without weather: clear sky and a
standard household profile)."""
