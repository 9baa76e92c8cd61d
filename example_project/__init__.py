"""A small Django project that shows convex_scheduler at work (see ``scripts/demo``)."""
