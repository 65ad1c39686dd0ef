"""Malformed, hostile and corrupt inputs: each gets a named error or a counted skip."""
