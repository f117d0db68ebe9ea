"""The vault agent: the customer-hosted daemon that stores, serves, rotates and audits secrets."""
