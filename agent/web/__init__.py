"""The agent's HTTP side: peer API, admin API, webhooks, metrics, health."""
