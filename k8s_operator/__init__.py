"""The Kubernetes operator (kopf) that runs vault agents for ``VaultAgent`` resources."""

GROUP = "keyvault.io"
VERSION = "v1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "VaultAgent"
PLURAL = "vaultagents"
MANAGER = "keyvault-operator"
