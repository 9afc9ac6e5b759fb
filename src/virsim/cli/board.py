"""`virsim board …`: list, show, validate board templates and print the BoardConfig schema.

Boards need no daemon: these commands read and validate files in this process. virsim.board is
imported inside the commands so that other commands do not pay for it at start-up.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from virsim.cli.common import JsonOpt
from virsim.cli.render import emit, out, print_json, table

app = typer.Typer(help="Board templates: list, show, validate, schema.", no_args_is_help=True)


@app.command("list")
def list_(as_json: JsonOpt = False) -> None:
    """List the boards shipped in boards/.

    Example: virsim board list
    """
    from virsim.board import list_templates

    boards = list_templates()
    rows = [{"name": name, "system_id": b.system_id, "title": b.name, "nodes": len(b.nodes),
             "processor": b.nodes[0].processor.type, "backend": b.session_backend,
             "node_backends": {n.id: n.backend for n in b.nodes},
             "runs_on": sorted({be for n in b.nodes for be in n.runs_on})} for name, b in boards.items()]

    def human() -> None:
        t = table("NAME", "PROCESSOR", "BACKEND", "RUNS ON", "NODES", "DESCRIPTION")
        for r in rows:
            t.add_row(r["name"], r["processor"], r["backend"], ",".join(r["runs_on"]), str(r["nodes"]), r["title"])
        out.print(t)

    emit(rows, as_json, human)


@app.command("show")
def show(board: Annotated[str, typer.Argument(help="Board name (see board list) or a .yaml/.json file.")],
         as_json: JsonOpt = False) -> None:
    """Show a board's resolved BoardConfig.

    Sizes and addresses as numbers, defaults filled in; for a multi-node board, which interconnect
    each backend runs.

    Example: virsim board show mps2-an385

    Example: virsim board show boards/dual-core-mailbox.yaml   # and which interconnect each backend runs
    """
    from virsim.board import board_to_dict, resolve_board

    from virsim.backends.renode.platform import describe as describe_renode
    from virsim.sync.system import interconnect_support

    config, source = resolve_board(board)
    data = board_to_dict(config)
    support = interconnect_support(config)
    # What Renode runs for each node that can run there (the platform virsim generates, or a stock one).
    renode = {n.id: describe_renode(n) for n in config.nodes if "renode" in n.runs_on}

    def human() -> None:
        out.print(f"[bold]{config.name}[/]  ({config.system_id}, from {source})")
        if config.description:
            out.print(config.description)
        if config.multi_node:
            out.print(f"sessions of it run on backend {config.session_backend}: the nodes in lockstep, each on its own "
                      "backend")
        for node in config.nodes:
            qemu = f", qemu machine {node.qemu.machine}" if node.qemu else ""
            out.print(f"\n[bold]node {node.id}[/]: {node.processor.type} x{node.processor.cores} @ "
                      f"{node.processor.frequency / 1e6:g} MHz, backend {node.backend} "
                      f"(runs on {', '.join(node.runs_on)}){qemu}")
            t = table("MEMORY", "TYPE", "ADDRESS", "SIZE", "ACCESS")
            for m in node.memory:
                t.add_row(m.name or "-", m.type, f"{m.address:#010x}", f"{m.size:#x}", m.access)
            out.print(t)
            on_renode = renode.get(node.id)
            if node.peripherals:
                cols = ("PERIPHERAL", "TYPE", "ADDRESS", "IRQ", "CONSOLE") + (("ON RENODE",) if on_renode else ())
                t = table(*cols)
                for p in node.peripherals:
                    row = [p.id, p.type, f"{p.address:#010x}", "-" if p.irq is None else str(p.irq),
                           "yes" if p.console else ""]
                    if on_renode:
                        models = on_renode.get("models") or {}
                        row.append(str(models[p.id]) if p.id in models else "absent (reads 0)"
                                   if p.id in (on_renode.get("absent") or []) else "no model: refused"
                                   if on_renode.get("platform") == "generated" else "-")
                    t.add_row(*row)
                out.print(t)
            if on_renode:
                plat = on_renode.get("platform")
                out.print(f"on Renode: {'a platform generated from this node' if plat == 'generated' else plat}"
                          + (f" ({on_renode['error']})" if on_renode.get("error") else ""))
                if on_renode.get("console"):
                    out.print(f"  console on {on_renode['console']}")
                for line in on_renode.get("dropped_downloads") or []:
                    out.print(f"  left out (Renode runs offline): {line}")
                if on_renode.get("svd"):
                    out.print(f"  applied instead: ApplySVD @{on_renode['svd']}")
        if support:
            out.print("\n[bold]interconnect[/] (what a multi-node session runs, by the backend of the nodes it joins)")
            t = table("KIND", "WHAT", "BUILT-IN NODES", "QEMU NODES", "RENODE NODES")
            for row in support:
                t.add_row(row["kind"], row["what"], row["builtin"], row["qemu"], row["renode"])
            out.print(t)

    emit({"source": source, "backend": config.session_backend, "board": data, "interconnect_support": support,
          "renode": renode},
         as_json, human)


@app.command("validate")
def validate(path: Annotated[Path, typer.Argument(help="Board file (.yaml or .json).")], as_json: JsonOpt = False,
             allow_unsafe_qemu_args: Annotated[bool, typer.Option(
                 "--allow-unsafe-qemu-args", help="Accept qemu.extra_args that open the host (network, "
                 "semihosting, monitors, TCP character devices): as `session create` would with it.")] = False) -> None:
    """Validate a board file.

    Errors name the file, line, field path, bad value and what was expected. qemu.extra_args that
    open the host are errors unless --allow-unsafe-qemu-args.

    Example: virsim board validate my-board.yaml
    """
    from virsim.board import check_qemu_args, load_board_file

    config = load_board_file(path)
    check_qemu_args(config, str(path), allow_unsafe_qemu_args)
    result = {"file": str(path), "valid": True, "system_id": config.system_id, "nodes": len(config.nodes)}
    emit(result, as_json, lambda: out.print(f"[green]ok[/]: {path} is a valid board "
                                             f"({config.system_id}, {len(config.nodes)} node(s))"))


@app.command("schema")
def schema(as_json: JsonOpt = True) -> None:
    """Print the BoardConfig JSON Schema.

    For editors and validators; it is JSON with or without --json.

    Example: virsim board schema > boardconfig.schema.json
    """
    from virsim.board import board_json_schema

    print_json(board_json_schema())
