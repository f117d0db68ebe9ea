"""Shared foundation of KeyVault: crypto, TLS, settings, errors and the agent API client."""
