"""Accounts: registration, approval with an emailed site_id, sign-in, tokens."""
