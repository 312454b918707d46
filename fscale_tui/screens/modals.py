"""Small dialogs: a file picker, a yes/no confirmation, a one-line text prompt."""

from __future__ import annotations

from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, DirectoryTree, Input, Label, Static


class FilePicker(ModalScreen[Path | None]):
    """Choose a text file; dismisses with its path, or None on Esc."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Close")]

    def __init__(self, root: Path) -> None:
        super().__init__()
        self.root = root

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide"):
            yield Label(f"Load context from a file under {self.root}  (Enter picks, Esc closes)")
            yield DirectoryTree(self.root, id="tree")

    @on(DirectoryTree.FileSelected)
    def picked(self, event: DirectoryTree.FileSelected) -> None:
        """A file was chosen."""
        self.dismiss(Path(event.path))


class Confirm(ModalScreen[bool]):
    """Ask before changing something (y / n)."""

    BINDINGS = [Binding("y", "answer(True)", "Yes"), Binding("n,escape", "answer(False)", "No")]

    def __init__(self, question: str, detail: str = "") -> None:
        super().__init__()
        self.question = question
        self.detail = detail

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.question, classes="dialog-title", markup=False)
            if self.detail:
                yield Static(self.detail, classes="dialog-detail", markup=False)
            with Horizontal(classes="dialog-buttons"):
                yield Button("Yes (y)", id="yes", variant="primary", compact=True)
                yield Button("No (n)", id="no", compact=True)

    def action_answer(self, value: bool) -> None:
        """Close with the answer."""
        self.dismiss(value)

    @on(Button.Pressed)
    def pressed(self, event: Button.Pressed) -> None:
        """Yes or No was clicked."""
        self.dismiss(event.button.id == "yes")


class Prompt(ModalScreen[str | None]):
    """One line of text (Enter accepts, Esc cancels)."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel")]

    def __init__(self, title: str, value: str = "", placeholder: str = "", help_text: str = "") -> None:
        super().__init__()
        self.title_text = title
        self.value = value
        self.placeholder = placeholder
        self.help_text = help_text

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide"):
            yield Label(self.title_text, classes="dialog-title", markup=False)
            yield Input(self.value, placeholder=self.placeholder, id="prompt")
            if self.help_text:
                yield Static(self.help_text, classes="dialog-detail", markup=False)

    @on(Input.Submitted)
    def accepted(self, event: Input.Submitted) -> None:
        """Enter accepts the text."""
        self.dismiss(event.value)
