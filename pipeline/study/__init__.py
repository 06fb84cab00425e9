"""A study file into typed, validated objects, and those objects into core objects (experiment)."""
