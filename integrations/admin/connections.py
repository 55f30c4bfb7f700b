"""Placeholder: connections admin."""
