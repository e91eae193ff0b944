"""The historical data service: telemetry ingest, pseudonymous history, data-path report."""
