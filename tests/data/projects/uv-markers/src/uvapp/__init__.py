"""uv-markers app."""
