"""Small dialogs: a file picker, a yes/no confirmation, a one-line text prompt."""

from __future__ import annotations

from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, DirectoryTree, Input, Label, Static


class PickerTree(DirectoryTree):
    """The picker's tree: backspace goes up a folder."""

    BINDINGS = [Binding("backspace", "screen.up", "Up a folder")]


class FilePicker(ModalScreen[Path | None]):
    """Choose a text file: browse (backspace or ``..`` goes up) or type a path (Enter opens a
    folder or picks a file); dismisses with the file's path, or None on Esc."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Close")]

    def __init__(self, root: Path) -> None:
        super().__init__()
        self.root = root.expanduser().resolve()

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide", id="picker"):
            yield Label("", id="picker-where", markup=False)
            with Horizontal(classes="picker-row"):
                yield Button("↑ ..", id="picker-up", compact=True)
                yield Input(str(self.root) + "/", placeholder="type a path: a file or a folder",
                            compact=True, id="picker-path")
            yield PickerTree(self.root, id="tree")
            yield Static("", id="picker-error", classes="dialog-detail", markup=False)

    def on_mount(self) -> None:
        self._show_root()
        self.query_one(PickerTree).focus()

    def _show_root(self) -> None:
        self.query_one("#picker-where", Label).update(
            f"Load a file from {self.root}   (Enter picks · backspace or .. goes up · "
            "type a path above · Esc closes)")

    def open_folder(self, folder: Path) -> None:
        """Show ``folder`` in the tree."""
        self.root = folder
        self.query_one(PickerTree).path = folder
        self.query_one("#picker-path", Input).value = str(folder).rstrip("/") + "/"
        self.query_one("#picker-error", Static).update("")
        self._show_root()

    def action_up(self) -> None:
        """Go up one folder."""
        if self.root.parent != self.root:
            self.open_folder(self.root.parent)

    @on(Button.Pressed, "#picker-up")
    def up_pressed(self) -> None:
        """The ``..`` button."""
        self.action_up()

    @on(Input.Submitted, "#picker-path")
    def typed(self, event: Input.Submitted) -> None:
        """A typed path: a folder opens in the tree, a file is picked."""
        text = event.value.strip()
        if not text:
            return
        path = Path(text).expanduser()
        if not path.is_absolute():
            path = self.root / path
        try:
            path = path.resolve()
            is_dir, is_file = path.is_dir(), path.is_file()
        except OSError as exc:
            self.query_one("#picker-error", Static).update(f"{path}: {exc}")
            return
        if is_dir:
            self.open_folder(path)
            self.query_one(PickerTree).focus()
        elif is_file:
            self.dismiss(path)
        else:
            self.query_one("#picker-error", Static).update(f"no such file or folder: {path}")

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
