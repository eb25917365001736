"""Evaluation: pure metrics, retrieval evaluation and reports."""
