"""Certificates, enrollment and signatures (grows with the trust issue)."""
