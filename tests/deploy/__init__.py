"""Tests of the deployment artefacts: container image, compose file, configuration reference."""
