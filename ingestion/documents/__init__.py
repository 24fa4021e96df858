"""Reading documents: format detection, the parsers, page text, metadata."""
