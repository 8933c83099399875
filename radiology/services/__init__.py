"""Services: every write the app makes, each with its audit event."""
