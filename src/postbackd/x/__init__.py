"""X's wire format: the claim request, its OAuth 1.0a signature, the hashed device id, and
X's answers. Pure functions and a thin pooled client; no knowledge of the store or the API."""
