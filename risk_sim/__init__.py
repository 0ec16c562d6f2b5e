"""Loopback simulators of the venues, custodian, Slack and configuration service Risk Monitor talks to."""
