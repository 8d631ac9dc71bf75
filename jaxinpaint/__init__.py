"""jaxinpaint."""
