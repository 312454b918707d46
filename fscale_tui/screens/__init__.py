"""Textual screens, one per view (Ask, Generate, Health, Ratings, Panels, History, Profile,
Help).

Each is imported only when first shown. ``SCREENS`` is the one list of them: the app's modes,
the help screen and the command palette read it; adding a screen is a module here plus a line.
"""

#: mode name -> (module under fscale_tui.screens, class, title for palette and help)
SCREENS: dict[str, tuple[str, str, str]] = {
    "ask": ("ask", "AskScreen", "Ask / verify: live votes"),
    "generate": ("generate", "GenerateScreen", "Generate: candidates and judges"),
    "health": ("health", "HealthScreen", "Health: probe every model"),
    "ratings": ("ratings", "RatingsScreen", "Ratings: model ratings and challengers"),
    "panels": ("panels", "PanelsScreen", "Panels: list, edit, evolve"),
    "history": ("history", "HistoryScreen", "History: past calls and feedback"),
    "profile": ("profile", "ProfileScreen", "Profile: the cost/accuracy frontier (F8)"),
}
