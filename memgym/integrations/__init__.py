"""Bridges from memgym to other training frameworks (``memgym.integrations.trl``)."""
