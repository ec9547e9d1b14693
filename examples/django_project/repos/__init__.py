"""The example's own app: a toy repository list per user."""
