"""Textual terminal dashboard for operators."""
