"""Integrations of igsearch with other training frameworks (each import-guarded)."""
