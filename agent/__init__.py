"""The vault agent: the customer-hosted daemon that stores, serves, rotates and audits secrets."""

CONFIG_NAME = "agent.yaml"  # the config file `keyvault agent init` writes into the data folder
