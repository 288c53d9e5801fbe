"""The server edge: what the service shows to, and records of, clients it cannot trust."""
