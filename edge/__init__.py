"""The gateway daemon that runs on the Energy Box in each home."""
