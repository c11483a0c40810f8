"""Actuators: apply a configuration change and restore the previous version."""
