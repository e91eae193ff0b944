"""The cloud's receiver of security events forwarded by boxes and services."""
