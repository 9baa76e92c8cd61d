"""A chat whose messages self-destruct: the demo app of the example project."""
