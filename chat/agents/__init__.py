"""Agents (issue 17): tools a reply may call, MCP servers, memory and compaction.
chat/generation/generation.py runs the tool loop; this package holds what it calls."""
