"""Fixtures every test may use: a throwaway PKI (`fleet_ca`, `creds`)."""

pytest_plugins = ["tests.pki_fixtures"]
