"""Training methods: one LightningModule each, built from plain networks and scalar settings."""
