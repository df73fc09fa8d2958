"""Adapters that run adaspec's drafters inside other inference engines (``adaspec.integrations.vllm``).

Each adapter imports its engine only where it is used, so ``import adaspec`` never needs one.
"""
