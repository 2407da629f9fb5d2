"""Help in the usual Unix shape: `smart-router ask [OPTIONS] PROMPT`, `--tier TIER`, bare flags.

Typer 0.29 prints `{prompt}` in the usage line and a `<str>`/`<bool>` tag beside every option,
flags included; its Rich panels also keep the docstrings' line breaks, so long descriptions break
mid-sentence. The app turns Rich off (`rich_markup_mode=None`: click's formatter re-wraps the
text to the terminal) and its commands use this class for the names."""

from __future__ import annotations

from typing import TYPE_CHECKING

from typer.core import TyperArgument, TyperCommand

if TYPE_CHECKING:
    from typer import _click  # typer 0.29 ships its own copy of click


class PlainHelpCommand(TyperCommand):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            if param.metavar is None and not getattr(param, "is_flag", False):
                param.metavar = param.name.upper()

    def collect_usage_pieces(self, ctx: _click.Context) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if isinstance(param, TyperArgument):
                metavar = param.metavar or ""  # set in __init__ for every argument
                pieces.append(metavar if param.required else f"[{metavar}]")
        return pieces

    def format_options(self, ctx: _click.Context, formatter: _click.HelpFormatter) -> None:
        sections: dict[str, list[tuple[str, str]]] = {"Arguments": [], "Options": []}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
                continue
            if isinstance(param, TyperArgument):
                sections["Arguments"].append((param.metavar or "", record[1]))
            else:
                sections["Options"].append(record)
        for title, rows in sections.items():
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)
