"""The `keyvault` command line: the composition root that dispatches to each part."""
