"""Gymnasium environments of nasrl."""
