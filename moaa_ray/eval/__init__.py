"""Evaluation against a baseline: benchmark questions, judging and reports."""
