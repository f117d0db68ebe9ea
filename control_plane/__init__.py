"""The control plane: the SaaS half of KeyVault, which only ever holds metadata."""
