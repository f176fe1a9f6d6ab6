"""Shopify channel plugin: Admin GraphQL API client, webhooks and an emulator of that API."""
