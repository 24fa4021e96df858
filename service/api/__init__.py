"""The HTTP face: FastAPI app, routers, request and response bodies."""
