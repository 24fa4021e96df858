"""Webhooks (Standard Webhooks): signing deliveries, and where they may be sent."""
