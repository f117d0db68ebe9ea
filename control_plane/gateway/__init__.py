"""The agent gateway: a second TLS listener for enrollment and agents' uplink WebSockets."""
