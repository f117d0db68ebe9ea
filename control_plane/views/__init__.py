"""Thin HTTP views over the services."""
