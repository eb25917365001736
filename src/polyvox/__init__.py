"""polyvox: teach a text-only multilingual LLM to hear."""

__version__ = "0.1.0"
