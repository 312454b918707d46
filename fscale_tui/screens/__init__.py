"""Textual screens, one per view (Ask, Generate, Health, Ratings, Panels, History, Help).

Each is imported only when first shown (see ``fscale_tui.app.SCREENS``).
"""
