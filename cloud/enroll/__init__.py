"""Enrollment of Energy Boxes: one-time codes, the fleet's register of boxes, the HTTPS service
boxes enroll and renew with, and the revocation and re-enrollment flows."""
