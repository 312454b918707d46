"""Textual screens, one per view (Ask, Generate, Health, Ratings, Panels, History)."""
