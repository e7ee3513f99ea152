"""Scripted demonstration sources for imle-record (one module per task)."""
