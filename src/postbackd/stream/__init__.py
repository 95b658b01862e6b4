"""Events read from a Redis Stream as a member of a consumer group (PRODUCT.md 5)."""
