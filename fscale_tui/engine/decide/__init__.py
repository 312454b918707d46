"""decide: how replies become a decision — one stage of a vote (``vote``), the voting rules
(``rules``, a registry), final answers of free text (``answers``) and judges' replies
(``judgments``). (ARCHITECTURE.md: the layers.)"""
