"""Method cards: each pipeline module declares one; the About tab renders them."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Reference:
    title: str
    url: str


@dataclass(frozen=True)
class MethodCard:
    """What a method does, as input → model → output, with its strengths, limits and sources."""

    name: str
    tab: str
    summary: str
    inputs: str
    model: str
    output: str
    good_at: tuple[str, ...]
    bad_at: tuple[str, ...]
    references: tuple[Reference, ...] = field(default_factory=tuple)
    seed_document: str = ""

    def to_markdown(self) -> str:
        lines = [
            f"### {self.name}",
            self.summary,
            "",
            f"**Input** {self.inputs} → **Model** {self.model} → **Output** {self.output}",
            "",
            "**Good at:** " + "; ".join(self.good_at),
            "",
            "**Weak at:** " + "; ".join(self.bad_at),
        ]
        if self.references:
            lines += ["", "**Builds on:**"] + [f"- [{ref.title}]({ref.url})" for ref in self.references]
        if self.seed_document:
            lines += ["", f"*Source document: {self.seed_document}*"]
        return "\n".join(lines)
