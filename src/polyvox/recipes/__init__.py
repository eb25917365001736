"""Recipes: thin wiring of data, models, losses, the loop and evaluation."""
