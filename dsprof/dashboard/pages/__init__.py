"""Dash pages: each has PATH, TITLE, ``layout(ctx, query)`` and ``register(app, ctx)``."""
