"""The vLLM servers: finding and probing them, talking to them, starting them."""
