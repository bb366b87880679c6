"""Serving trained models over HTTP with Ray Serve (OpenAI-compatible routes)."""
