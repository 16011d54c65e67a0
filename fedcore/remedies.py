"""The methods the book compares at full bias, each FedAvg's configuration with some changes, and the grids their
settings are tuned on (fedcore.tuning).

A remedy is ``generic`` (built for any heterogeneity: FedAvgM, FedProx, FedAdam, SCAFFOLD, learning-rate decay),
built for ``label skew`` (workers that hold few classes, or one: FedRS, FedLC, FedNTD, FedAwS, FedBABU), or a
change to the ``data`` (a shared subset). Every grid has at least four values, taken from the method's paper or
official code where they give one (``source`` says which); a choice on an edge of the grid extends it, one value
at a time, by the values ``below`` or ``above`` it, as far as they go. Ties between values go to the side
where the method is weaker, nearer FedAvg (``Grid.weaker``): the smaller value, but the larger for FedRS's
alpha and the learning-rate decay factor, at whose value 1 the method is FedAvg.
"""

from __future__ import annotations

from dataclasses import dataclass

FAMILIES = ("baseline", "generic", "label skew", "data")


@dataclass(frozen=True)
class Grid:
    """The values tried for one setting (``param``), in order, and the values that extend the grid on either
    side (nearest first), with where the values come from, and the side (``weaker``: "below" or "above") on
    which the method is weaker, nearer FedAvg: a tie goes that way."""

    param: str
    values: tuple[float, ...]
    below: tuple[float, ...]
    above: tuple[float, ...]
    source: str
    weaker: str = "below"

    def __post_init__(self) -> None:
        ordered = [*reversed(self.below), *self.values, *self.above]
        if len(self.values) < 4 or ordered != sorted(ordered) or len(set(ordered)) != len(ordered):
            raise ValueError(f"grid of {self.param}: at least 4 values, increasing with its extensions")
        if self.weaker not in ("below", "above"):
            raise ValueError(f"grid of {self.param}: weaker must be 'below' or 'above'; got {self.weaker!r}")

    def toward_fedavg(self, value: float) -> float:
        """A key that is larger the nearer ``value`` lies to the weaker side (ties are broken by it)."""
        return -value if self.weaker == "below" else value


@dataclass(frozen=True)
class Remedy:
    """A method: its name in the book, its family, its fixed changes to FedAvg's configuration and, if tuned,
    its grid."""

    title: str
    family: str
    changes: dict[str, object]
    grid: Grid | None = None

    def setting(self, value: float | None = None) -> dict[str, object]:
        """The configuration changes at grid value ``value`` (untuned: the fixed changes)."""
        if self.grid is None:
            return dict(self.changes)
        return {**self.changes, self.grid.param: value}


HALF_DECADES = "half-decade steps"
REMEDIES: dict[str, Remedy] = {
    "fedavg": Remedy("FedAvg", "baseline", {}),
    "fedavgm": Remedy("FedAvgM", "generic", {"strategy": "fedavgm", "server_momentum": 0.9}, Grid(
        "server_lr", (0.03, 0.1, 0.3, 1.0), (0.01,), (3.0,),
        f"Reddi et al. 2021's server learning rates for FedAvgM at momentum 0.9, {HALF_DECADES}")),
    "fedprox": Remedy("FedProx", "generic", {"strategy": "fedprox"}, Grid(
        "mu", (0.001, 0.01, 0.1, 1.0), (0.0001,), (10.0,), "Li et al. 2020's grid of mu")),
    "fedadam": Remedy("FedAdam", "generic", {"strategy": "fedadam"}, Grid(
        "server_lr", (0.001, 0.003, 0.01, 0.03), (0.0003,), (0.1,),
        f"Reddi et al. 2021's server learning rates, {HALF_DECADES}, tau 0.001")),
    "scaffold": Remedy("SCAFFOLD", "generic", {"strategy": "scaffold"}, Grid(
        "server_lr", (0.125, 0.25, 0.5, 1.0), (0.0625,), (),
        "Karimireddy et al. 2020's server learning rate 1 and FedRepo's 0.25 and 0.5, halving")),
    "lr decay": Remedy("learning-rate decay", "generic", {}, Grid(
        "lr_decay", (0.9, 0.95, 0.97, 0.99), (0.8,), (0.995,),
        "ours: no paper gives one; factors per round around the 0.97 chosen before", weaker="above")),
    "fedrs": Remedy("FedRS", "label skew", {"strategy": "fedrs"}, Grid(
        "rs_alpha", (0.01, 0.1, 0.5, 0.9, 0.95, 0.99), (0.001,), (),
        "FedRepo's (the FedRS authors' code) alpha 0.1, 0.5, 0.9, 0.01 below and 0.95, 0.99 toward FedAvg's 1",
        weaker="above")),
    "fedlc": Remedy("FedLC (absent classes counted once)", "label skew", {"strategy": "fedlc"}, Grid(
        "lc_tau", (0.1, 0.3, 1.0, 3.0), (0.03,), (10.0,),
        f"around tau 1, the default of FL-bench's and fluke's FedLC, {HALF_DECADES}")),
    "fedntd": Remedy("FedNTD", "label skew", {"strategy": "fedntd", "ntd_temperature": 1.0}, Grid(
        "ntd_beta", (0.1, 0.3, 1.0, 3.0), (0.03,), (10.0,),
        f"around Lee et al. 2022's beta 1 at temperature 1, {HALF_DECADES}")),
    "fedaws": Remedy("FedAwS (server-side spreadout)", "label skew",
                     {"strategy": "fedaws", "aws_margin": 0.8, "aws_steps": 30}, Grid(
        "aws_lr", (0.01, 0.03, 0.1, 0.3), (0.003,), (1.0,),
        f"FedRepo's margin 0.8, 30 steps and learning rates 0.01 and 0.1, {HALF_DECADES}")),
    "fedbabu": Remedy("FedBABU (fixed head)", "label skew", {"strategy": "fedbabu"}),
    "shared 5%": Remedy("the shared subset", "data", {"shared_fraction": 0.05}),
}


def tuned() -> list[str]:
    """The remedies with a grid."""
    return [m for m, r in REMEDIES.items() if r.grid is not None]


def of_family(family: str) -> list[str]:
    """The remedies of a family."""
    return [m for m, r in REMEDIES.items() if r.family == family]


def setting_text(changes: dict[str, object]) -> str:
    """Configuration changes in words, e.g. 'server_lr 0.5, server_momentum 0.9' (the strategy's name left
    out)."""
    return ", ".join(f"{k} {v:g}" for k, v in changes.items() if k != "strategy") or "standard settings"
