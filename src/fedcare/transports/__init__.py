"""Transports: move params and updates between the round engine and the sites."""
