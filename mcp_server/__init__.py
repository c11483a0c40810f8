"""FastMCP server over kaizen state: tools, auth, read model, dashboard."""
