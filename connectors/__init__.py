"""All outside IO: CloudWatch sources, actuators that apply changes, LLM providers."""
