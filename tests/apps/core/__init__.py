"""Tests of apps.core: view models, live stream and shell."""
