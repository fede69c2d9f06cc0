"""What each contaminant class does to the maps: zero weight, flag only, or nothing."""

from __future__ import annotations

from dataclasses import dataclass, field

from maxidetect.classes import CLASS_NAMES, CLASSES, class_index

__all__ = ["ACTIONS", "MapPolicy"]

ACTIONS = ("zero", "flag", "none")


@dataclass
class MapPolicy:
    """What each class does to the maps.

    Parameters
    ----------
    actions : dict
        ``{abbr: "zero" | "flag" | "none"}``; "zero" sets weight 0 (and the
        flag bit), "flag" sets the flag bit only, "none" ignores the class.
        Missing classes take the registry's ``weight_action``.
    grow : int
        Grow zero-weight regions by this many pixels (square structuring
        element), to catch the faint halo of a defect below threshold.
    soft : bool
        Weight ``1 - max p`` over the "zero" classes instead of 0/1.
    noise : bool
        Multiply the weights by ``(global rms / local rms)**2`` (at most 1)
        from a SEP background map (64 px mesh): thresholds then follow the
        local noise where it is higher than typical,
        as SExtractor's WEIGHT_TYPE BACKGROUND would, which stops noise peaks
        in bright-background, nebular and fringed areas from being detected
        (one weight map cannot carry both, so maxidetect folds it in). Off
        by default: on simulated truth it cut spurious detections from -60%
        to -71% but cost 1.2 points of completeness (sources merged into
        bright-background isophotes; benchmarks/results/tuning.md).
    class_grow : dict
        Extra growth per class [pix] (default: the registry's ``map_grow``;
        trails get 2 px because their faint wings break into fragments).
    fuse : bool
        Check and complete the network's masks with the frame's own evidence
        before anything gets zero weight (:mod:`maxidetect.maps.fusion`:
        star protection, fitted trails and columns, L.A.Cosmic). False: the
        network's thresholded masks alone (``--network-only``).
    """

    actions: dict = field(default_factory=dict)
    grow: int = 0
    soft: bool = False
    noise: bool = False
    class_grow: dict = field(default_factory=lambda: {c.abbr: c.map_grow for c in CLASSES})
    fuse: bool = True

    def __post_init__(self):
        full = {c.abbr: c.weight_action for c in CLASSES}
        for abbr, act in self.actions.items():
            act = act.lower()
            if act not in ACTIONS:
                raise ValueError(f"class {abbr}: action {act!r} not one of {', '.join(ACTIONS)}")
            full[CLASS_NAMES[class_index(abbr)]] = act
        self.actions = full
        if self.grow < 0:
            raise ValueError(f"grow must be >= 0 pixels, got {self.grow}")

    @classmethod
    def parse(cls, spec: str | None, grow: int = 0, soft: bool = False, noise: bool = False,
              fuse: bool = True) -> MapPolicy:
        """From ``"SAT=zero,FR=none"`` overrides of the registry defaults."""
        actions = {}
        for item in (spec or "").split(","):
            if not item.strip():
                continue
            if "=" not in item:
                raise ValueError(f"policy item {item!r} is not CLASS=ACTION")
            abbr, act = item.split("=", 1)
            actions[abbr.strip()] = act.strip()
        return cls(actions, grow=grow, soft=soft, noise=noise, fuse=fuse)

    def indices(self, action: str) -> list[int]:
        return [i for i, c in enumerate(CLASSES) if self.actions[c.abbr] == action]

    def header_cards(self) -> list[tuple]:
        zero = ",".join(CLASSES[i].abbr for i in self.indices("zero")) or "none"
        flag = ",".join(CLASSES[i].abbr for i in self.indices("flag")) or "none"
        return [
            ("MDWZERO", zero, "classes given weight 0"),
            ("MDWFLAG", flag, "classes only flagged"),
            ("MDWGROW", self.grow, "zero-weight growth [pix]"),
            ("MDWSOFT", self.soft, "soft weights 1-p"),
            ("MDWNOISE", self.noise, "weights x (global/local rms)^2"),
            ("MDWFUSE", self.fuse, "network masks fused with frame evidence"),
        ]

    def grow_of(self, ci: int) -> int:
        return self.grow + int(self.class_grow.get(CLASSES[ci].abbr, 0))
