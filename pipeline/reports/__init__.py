"""Replays of finished trials through the core, and the pictures drawn from them."""
