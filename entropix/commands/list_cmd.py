"""List experiments, registered methods and the configs under configs/."""

from pathlib import Path


def add_arguments(parser):
    parser.add_argument("--configs-dir", default="configs", help="where to look for YAML configs")
    parser.add_argument(
        "what", nargs="?", default="all", choices=("all", "experiments", "methods", "configs")
    )


def _first_line(text: str | None) -> str:
    return (text or "").strip().splitlines()[0] if (text or "").strip() else ""


def lines(what: str = "all", configs_dir: str = "configs") -> list[str]:
    """The listing as text lines."""
    import experiments
    from entropix import config as cfg
    from entropix import losses

    out = []
    if what in ("all", "experiments"):
        out.append("experiments:")
        for name in experiments.EXPERIMENTS:
            out.append(f"  {name:20s} {_first_line(experiments.module(name).__doc__)}")
    if what in ("all", "methods"):
        out.append("methods:")
        for info in sorted(losses.REGISTRY.values(), key=lambda i: (i.kind, i.name)):
            out.append(f"  {info.name:24s} {info.kind:12s} {info.paper}")
    if what in ("all", "configs"):
        out.append(f"configs ({configs_dir}):")
        for path in sorted(Path(configs_dir).glob("*.yaml")):
            data = cfg.read_yaml(path)
            out.append(
                f"  {str(path):40s} {data.get('experiment', '?'):20s} {data.get('description', '')}"
            )
    return out


def run(args) -> int:
    print("\n".join(lines(args.what, args.configs_dir)))
    return 0
