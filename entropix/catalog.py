"""What an installation holds: the experiment families, the registered methods and the YAML
configs of a directory, as text lines (``entropix list`` prints them)."""

from pathlib import Path

WHAT = ("all", "experiments", "methods", "configs")


def _first_line(text: str | None) -> str:
    return (text or "").strip().splitlines()[0] if (text or "").strip() else ""


def catalog_lines(what: str = "all", configs_dir: str = "configs") -> list[str]:
    """The listing as text lines.

    Args:
        what: one of ``WHAT``: everything, or only the experiments, methods or configs.
        configs_dir: the directory whose ``*.yaml`` files are listed.

    Returns:
        One string per line: a heading per section, then one indented line per entry (an
        experiment and its docstring's first line; a method, its kind and paper; a config, its
        experiment and description).
    """
    import experiments
    from entropix import config as cfg
    from entropix import losses
    from entropix.validation import check_choice

    check_choice(what, "what", WHAT)
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
