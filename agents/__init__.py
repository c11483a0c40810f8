"""Faust agents: thin async loops over the topics; their pure logic lives in agents.logic."""
