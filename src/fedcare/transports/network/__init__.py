"""Networked deployment: a coordinator service and site agents that connect to it over HTTPS."""
