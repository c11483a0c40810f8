"""LLM providers behind one interface (Bedrock Converse, OpenAI-compatible HTTP)."""
