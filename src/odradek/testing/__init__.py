"""Helpers for testing applications against an embedded Odradek broker."""
