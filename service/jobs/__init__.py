"""Jobs: work a client asks for on a document, run on vLLM under the KV ledger."""
