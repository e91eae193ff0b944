"""Simulated home devices that speak real protocols on loopback, driven by household physics.

A separate program: it imports nothing of Homeflex and Homeflex imports nothing of it.
"""
