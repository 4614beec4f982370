"""Materialised read models: tables the projection runner keeps in step with the events,
inside each append's transaction (key metadata, secret versions, migration runs)."""
