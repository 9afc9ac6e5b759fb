"""BoardConfig (virsim.board): sizes, frequencies, templates, error messages; and `virsim board`.

A bad board file must give a BoardConfigError that names the file, the line, the dotted field path
(`nodes[0].memory[1].size`) and the bad value, so a user can fix it without reading the schema.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from virsim.board import (
    BoardConfig,
    list_templates,
    load_board_file,
    parse_board,
    parse_frequency,
    parse_size,
    resolve_board,
)
from virsim.errors import BoardConfigError, NotFound

from conftest import ROOT, CLI

TEMPLATE_NAMES = sorted(p.stem for p in (ROOT / "boards").glob("*.yaml"))

# One node, line numbers fixed (the error tests point at them):
BASE = """\
system_id: test-board
name: Test board
nodes:
  - id: cpu0
    backend: qemu
    processor: {type: cortex-m3, cores: 1, frequency: 25MHz}
    memory:
      - {name: code, type: RAM, address: 0x00000000, size: 4M}
      - {name: data, type: RAM, address: 0x20000000, size: 4M}
    peripherals:
      - {id: uart0, type: cmsdk-uart, address: 0x40004000, irq: 0, console: true}
    qemu: {machine: mps2-an385}
"""
MEM1_LINE = 9  # nodes[0].memory[1]
PROC_LINE = 6

# Two nodes on QEMU mps2-an385 sharing a mailbox, with an IRQ route and an MMIO window.
TWO_NODES = """\
system_id: twin-an385
name: Two MPS2 AN385 nodes
nodes:
  - id: app
    backend: qemu
    processor: {type: cortex-m3, frequency: 25MHz}
    memory:
      - {name: code, type: RAM, address: 0x0, size: 4M}
      - {name: data, type: RAM, address: 0x20000000, size: 4M}
    peripherals:
      - {id: uart0, type: cmsdk-uart, address: 0x40004000, irq: 0, console: true}
    qemu: {machine: mps2-an385}
  - id: radio
    backend: qemu
    processor: {type: cortex-m3, frequency: 25MHz}
    memory:
      - {name: code, type: RAM, address: 0x0, size: 4M}
      - {name: data, type: RAM, address: 0x20000000, size: 4M}
    qemu: {machine: mps2-an385}
interconnect:
  shared_memory:
    - {id: mailbox, size: 4K, mappings: {app: 0x20300000, radio: 0x20300000}}
  irq_routes:
    - {source: app.uart0, target: radio, irq: 3}
  mmio_map:
    - {node: app, address: 0x50000000, size: 4K, target: radio, target_address: 0x20000000}
"""
SECOND_NODE_LINE = 13  # "  - id: radio"
IRQ_ROUTE_LINE = 24


def write(tmp_path: Path, text: str, name: str = "bad.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def board_error(path: Path) -> BoardConfigError:
    with pytest.raises(BoardConfigError) as info:
        load_board_file(path)
    err = info.value
    assert err.code == "BOARD_INVALID" and err.exit_code == 2
    assert err.details["file"] == str(path)
    return err


def assert_names(err: BoardConfigError, path: Path, line: int, field: str, value: str) -> None:
    msg = str(err)
    assert f"{path}:{line}:" in msg, f"file and line {line} not in: {msg}"
    assert field in msg, f"field path {field!r} not in: {msg}"
    assert value in msg.replace(str(path), ""), f"bad value {value!r} not in: {msg}"


# ---------------------------------------------------------------------------------------- parsing


@pytest.mark.parametrize("value, expected", [
    (4096, 4096), ("4096", 4096), ("0x1000", 4096), ("4K", 4096), ("4KiB", 4096), ("4kB", 4096),
    ("1M", 1 << 20), ("2G", 2 << 30), ("0x2000_0000", 0x20000000), (0, 0),
])
def test_parse_size_accepts(value: object, expected: int) -> None:
    assert parse_size(value) == expected


@pytest.mark.parametrize("value", [-1, "-1", "abc", True, False, "", "1.5M", "4Q", None, 4.0])
def test_parse_size_rejects(value: object) -> None:
    with pytest.raises(ValueError):
        parse_size(value)


@pytest.mark.parametrize("value, expected", [
    ("25MHz", 25_000_000), ("1GHz", 1_000_000_000), (168000000, 168_000_000), ("32kHz", 32_000),
    ("50 MHz", 50_000_000), ("1.5GHz", 1_500_000_000),
])
def test_parse_frequency_accepts(value: object, expected: int) -> None:
    assert parse_frequency(value) == expected


@pytest.mark.parametrize("value", [0, -5, True, "fast", "25MB", "0Hz", "0MHz", "0.1Hz"])
def test_parse_frequency_rejects_non_positive_and_garbage(value: object) -> None:
    # A clock must be positive: "0Hz" is as wrong as the integer 0.
    with pytest.raises(ValueError):
        parse_frequency(value)


# -------------------------------------------------------------------------------------- templates


def test_templates_are_the_boards_directory() -> None:
    assert TEMPLATE_NAMES, "no templates in boards/"
    assert sorted(list_templates()) == TEMPLATE_NAMES
    assert {"mps2-an385", "netduinoplus2", "lm3s811evb", "virt-a15"} <= set(TEMPLATE_NAMES)


@pytest.mark.parametrize("name", TEMPLATE_NAMES)
def test_every_template_loads(name: str) -> None:
    board, source = resolve_board(name)
    assert isinstance(board, BoardConfig)
    assert Path(source).name == f"{name}.yaml"
    assert board.system_id == name
    node = board.nodes[0]
    assert node.processor.frequency > 0
    assert node.memory and all(r.size > 0 for r in node.memory)
    assert board.console_peripheral(node) is not None, "every template has a console UART"
    if node.backend == "qemu":
        assert node.qemu is not None and node.qemu.machine


def test_template_values_are_parsed() -> None:
    board, _ = resolve_board("mps2-an385")
    node = board.nodes[0]
    assert node.processor.type == "cortex-m3" and node.processor.frequency == 25_000_000
    # QEMU's map (`info mtree`): SSRAM1 and its mirror, block RAM and three mirrors, SSRAM2/3 and its
    # mirror, PSRAM
    assert [(m.address, m.size, m.mirror_of) for m in node.memory] == [
        (0, 4 << 20, None), (0x00400000, 4 << 20, "ssram1"), (0x01000000, 16 << 10, None),
        (0x01004000, 16 << 10, "blockram"), (0x01008000, 16 << 10, "blockram"), (0x0100C000, 16 << 10, "blockram"),
        (0x20000000, 4 << 20, None), (0x20400000, 4 << 20, "ssram23"), (0x21000000, 16 << 20, None)]
    assert node.processor.bitband and any(u.name == "reserved" for u in node.unmodelled)
    assert node.qemu is not None and node.qemu.machine == "mps2-an385"
    assert not board.multi_node


def test_resolve_unknown_board_is_not_found() -> None:
    with pytest.raises(NotFound) as info:
        resolve_board("nosuch")
    assert "mps2-an385" in str(info.value)  # lists the known boards
    with pytest.raises(NotFound):
        resolve_board("/nonexistent/board.yaml")


def test_base_fixture_is_valid(tmp_path: Path) -> None:
    # The error tests below each break one thing of BASE; BASE itself must be valid.
    board = load_board_file(write(tmp_path, BASE, "ok.yaml"))
    assert board.nodes[0].memory[1].address == 0x20000000


def test_two_node_board(tmp_path: Path) -> None:
    board = load_board_file(write(tmp_path, TWO_NODES, "twin.yaml"))
    assert board.multi_node
    assert [n.id for n in board.nodes] == ["app", "radio"]
    assert all(n.qemu is not None and n.qemu.machine == "mps2-an385" for n in board.nodes)
    assert board.interconnect.shared_memory[0].mappings == {"app": 0x20300000, "radio": 0x20300000}
    assert board.interconnect.mmio_map[0].target_address == 0x20000000


# ---------------------------------------------------------------------------------- bad board files


def test_unknown_optional_field_typo(tmp_path: Path) -> None:
    path = write(tmp_path, BASE.replace("size: 4M}\n    peripherals", "size: 4M, acess: RO}\n    peripherals"))
    err = board_error(path)
    assert_names(err, path, MEM1_LINE, "nodes[0].memory[1].acess", "RO")


def test_misspelled_required_field_names_the_typo(tmp_path: Path) -> None:
    # `adress` for `address`: the message must point at the misspelled key the user wrote
    # (not only at the missing `address`), with its line and value.
    path = write(tmp_path, BASE.replace("address: 0x20000000", "adress: 0x20000000"))
    err = board_error(path)
    assert_names(err, path, MEM1_LINE, "nodes[0].memory[1].adress", "adress")
    paths = [p["path"] for p in err.details["problems"]]
    assert "nodes[0].memory[1].adress" in paths


def test_bad_size_string(tmp_path: Path) -> None:
    path = write(tmp_path, BASE.replace("0x20000000, size: 4M", "0x20000000, size: 4Q"))
    err = board_error(path)
    assert_names(err, path, MEM1_LINE, "nodes[0].memory[1].size", "'4Q'")
    problem = err.details["problems"][0]
    assert problem == {**problem, "path": "nodes[0].memory[1].size", "line": MEM1_LINE, "value": "4Q"}
    assert "64K" in problem["message"]  # says what was expected


def test_negative_size(tmp_path: Path) -> None:
    path = write(tmp_path, BASE.replace("0x20000000, size: 4M", "0x20000000, size: -1"))
    assert_names(board_error(path), path, MEM1_LINE, "nodes[0].memory[1].size", "-1")


def test_zero_frequency_is_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, BASE.replace("frequency: 25MHz", "frequency: 0Hz"))
    assert_names(board_error(path), path, PROC_LINE, "nodes[0].processor.frequency", "0Hz")


def test_overlapping_memory_regions(tmp_path: Path) -> None:
    # data at 2 MiB overlaps code (0..4 MiB): the error points at the second region's entry.
    path = write(tmp_path, BASE.replace("address: 0x20000000", "address: 0x00200000"))
    err = board_error(path)
    assert_names(err, path, MEM1_LINE, "nodes[0].memory[1]", "0x200000")
    assert "overlap" in str(err)


def test_unknown_processor_type(tmp_path: Path) -> None:
    path = write(tmp_path, BASE.replace("type: cortex-m3", "type: cortex-m99"))
    err = board_error(path)
    assert_names(err, path, PROC_LINE, "nodes[0].processor", "'cortex-m99'")
    assert "cortex-m4" in str(err)  # lists the known types


def test_unknown_backend(tmp_path: Path) -> None:
    path = write(tmp_path, BASE.replace("backend: qemu", "backend: bochs"))
    assert_names(board_error(path), path, 5, "nodes[0].backend", "'bochs'")


def test_duplicate_node_ids(tmp_path: Path) -> None:
    text = TWO_NODES.split("interconnect:")[0].replace("  - id: radio", "  - id: app")
    path = write(tmp_path, text)
    err = board_error(path)
    assert "duplicate node id" in str(err)
    assert_names(err, path, SECOND_NODE_LINE, "nodes[1].id", "app")


def test_interconnect_names_unknown_node(tmp_path: Path) -> None:
    path = write(tmp_path, TWO_NODES.replace("target: radio, irq: 3", "target: modem, irq: 3"))
    err = board_error(path)
    assert "unknown node" in str(err)
    assert_names(err, path, IRQ_ROUTE_LINE, "interconnect.irq_routes[0]", "'modem'")


def test_shared_memory_names_unknown_node(tmp_path: Path) -> None:
    path = write(tmp_path, TWO_NODES.replace("radio: 0x20300000", "modem: 0x20300000"))
    err = board_error(path)
    assert "'modem'" in str(err)
    assert "interconnect.shared_memory[0]" in str(err)


def test_invalid_yaml_syntax_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, BASE.replace("name: Test board", "name: Test: board"))
    err = board_error(path)
    assert f"{path}:2:" in str(err)
    assert err.details["problems"][0]["line"] == 2


def test_top_level_list_is_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, "- system_id: x\n- name: y\n")
    err = board_error(path)
    assert str(path) in str(err)
    assert "mapping" in str(err)


def test_missing_board_file(tmp_path: Path) -> None:
    err = board_error(tmp_path / "nothere.yaml")
    assert "nothere.yaml" in str(err)


def test_json_board_file_is_accepted(tmp_path: Path) -> None:
    doc = {"system_id": "json-board", "name": "JSON board", "nodes": [{
        "id": "cpu0", "backend": "qemu", "processor": {"type": "cortex-m4", "frequency": "168MHz"},
        "memory": [{"type": "Flash", "address": "0x08000000", "size": "1M", "access": "RO"},
                   {"type": "RAM", "address": 0x20000000, "size": 131072}],
        "qemu": {"machine": "netduinoplus2"}}]}
    board = load_board_file(write(tmp_path, json.dumps(doc, indent=2), "board.json"))
    assert board.system_id == "json-board"
    assert board.nodes[0].processor.frequency == 168_000_000
    assert [(m.address, m.size) for m in board.nodes[0].memory] == [(0x08000000, 1 << 20), (0x20000000, 128 << 10)]


def test_json_board_errors_have_lines_too(tmp_path: Path) -> None:
    text = ('{"system_id": "j", "name": "J",\n'
            ' "nodes": [{"id": "a", "backend": "qemu", "processor": {"type": "cortex-m3", "frequency": "25MHz"},\n'
            '   "memory": [{"type": "RAM", "address": "0x0", "size": "4Q"}]}]}\n')
    path = write(tmp_path, text, "bad.json")
    assert_names(board_error(path), path, 3, "nodes[0].memory[0].size", "'4Q'")


def test_parse_board_uses_the_source_name() -> None:
    with pytest.raises(BoardConfigError) as info:
        parse_board("system_id: x\nname: y\nnodes: []\n", "inline-source")
    assert str(info.value).startswith("inline-source:3:")
    assert "nodes" in str(info.value)


# ------------------------------------------------------------------------------------------------ CLI


def test_cli_board_list_json(cli: CLI) -> None:
    rows = cli.json("board", "list")
    by_name = {r["name"]: r for r in rows}
    assert {"mps2-an385", "netduinoplus2", "lm3s811evb", "virt-a15"} <= set(by_name)
    assert by_name["mps2-an385"]["processor"] == "cortex-m3"
    assert by_name["netduinoplus2"]["processor"] == "cortex-m4"
    assert by_name["virt-a15"]["processor"] == "cortex-a15"
    assert all(r["backend"] == "qemu" and r["nodes"] == 1 for r in rows if r["nodes"] == 1
               and r["name"] != "stm32f4-discovery")
    assert by_name["stm32f4-discovery"]["backend"] == "renode"  # Renode's stock platform by default
    assert by_name["dual-core-mailbox"]["nodes"] == 2 and by_name["dual-core-mailbox"]["backend"] == "system"


def test_cli_board_show_json_has_numbers(cli: CLI) -> None:
    doc = cli.json("board", "show", "mps2-an385")
    assert Path(doc["source"]).name == "mps2-an385.yaml"
    node = doc["board"]["nodes"][0]
    assert node["processor"]["frequency"] == 25_000_000
    assert node["memory"][6]["address"] == 0x20000000
    assert node["memory"][6]["size"] == 4 << 20
    uart = next(p for p in node["peripherals"] if p["console"])
    assert uart["address"] == 0x40004000 and isinstance(uart["address"], int)


def test_cli_board_show_human(cli: CLI) -> None:
    out = cli("board", "show", "netduinoplus2").stdout
    assert "cortex-m4" in out and "0x08000000" in out


def test_cli_validate_two_node_board(cli: CLI, tmp_path: Path) -> None:
    path = write(tmp_path, TWO_NODES, "twin.yaml")
    proc = cli("board", "validate", str(path))
    assert "twin-an385" in proc.stdout and "2 node" in proc.stdout
    doc = cli.json("board", "validate", str(path))
    assert doc == {"file": str(path), "valid": True, "system_id": "twin-an385", "nodes": 2}


def test_cli_validate_bad_board(cli: CLI, tmp_path: Path) -> None:
    path = write(tmp_path, BASE.replace("0x20000000, size: 4M", "0x20000000, size: 4Q"))
    proc = cli("board", "validate", str(path), check=2)
    assert str(path) in proc.stderr
    assert "nodes[0].memory[1].size" in proc.stderr
    assert "BOARD_INVALID" in proc.stderr
    assert proc.stdout == ""


def test_cli_validate_bad_board_json(cli: CLI, tmp_path: Path) -> None:
    path = write(tmp_path, BASE.replace("0x20000000, size: 4M", "0x20000000, size: 4Q"))
    proc = cli("board", "validate", str(path), "--json", check=2)
    doc = json.loads(proc.stdout)  # exactly one JSON document: json.loads rejects trailing text
    assert set(doc) == {"error", "code", "details"}
    assert doc["code"] == "BOARD_INVALID"
    assert str(path) in doc["error"]
    assert doc["details"]["file"] == str(path)
    assert doc["details"]["problems"][0]["path"] == "nodes[0].memory[1].size"
    assert doc["details"]["problems"][0]["line"] == MEM1_LINE
    assert doc["details"]["problems"][0]["value"] == "4Q"
    assert proc.stderr == ""


def test_cli_error_message_is_not_rich_markup(cli: CLI, tmp_path: Path) -> None:
    # User data in an error message (here a processor type) must be printed literally: rich
    # markup like "[/x]" must neither crash the CLI nor be swallowed.
    path = write(tmp_path, BASE.replace("type: cortex-m3", 'type: "[/x]"'))
    proc = cli("board", "validate", str(path), check=False)
    assert "Traceback" not in proc.stderr
    assert proc.returncode == 2, proc.stderr
    assert "[/x]" in proc.stderr
    path = write(tmp_path, BASE.replace("type: cortex-m3", 'type: "[red]zz"'), "bad2.yaml")
    proc = cli("board", "validate", str(path), check=2)
    assert "[red]zz" in proc.stderr


def test_cli_board_schema(cli: CLI) -> None:
    schema = json.loads(cli("board", "schema").stdout)
    assert "nodes" in schema["properties"]
    assert {"system_id", "name", "nodes"} <= set(schema["required"])
    assert "Node" in schema["$defs"]


def test_cli_board_show_unknown(cli: CLI) -> None:
    proc = cli("board", "show", "nosuch", check=3)
    assert "nosuch" in proc.stderr and "mps2-an385" in proc.stderr
    doc = json.loads(cli("board", "show", "nosuch", "--json", check=3).stdout)
    assert doc["code"] == "NOT_FOUND" and doc["details"]["id"] == "nosuch"


# ----------------------------------------------------------------------- interconnect validation

@pytest.mark.parametrize("change, field, words", [
    # a shared window over a peripheral (a window inside one RAM region is fine: it is carved out)
    (("app: 0x20300000", "app: 0x40004000"), "interconnect.shared_memory[0].mappings.app", "overlaps peripheral uart0"),
    (("app: 0x20300000", "app: 0x20300800"), "interconnect.shared_memory[0].mappings.app", "multiples of 4K"),
    (("target: radio, irq: 3", "target: radio, irq: 40"), "interconnect.irq_routes[0].irq", "lines 0..31"),
    (("source: app.uart0", "source: app.doorbell"), "interconnect.irq_routes[0].source", "node.peripheral"),
    (("address: 0x50000000", "address: 0x40004000"), "interconnect.mmio_map[0].address", "overlaps peripheral uart0"),
    (("size: 4K, target: radio", "size: 8M, target: radio"), "interconnect.mmio_map[0].size", "size mismatch"),
])
def test_interconnect_problems_name_the_field(tmp_path: Path, change: tuple[str, str], field: str, words: str) -> None:
    assert change[0] in TWO_NODES
    path = write(tmp_path, TWO_NODES.replace(*change))
    with pytest.raises(BoardConfigError) as err:
        load_board_file(path)
    assert field in str(err.value) and words in str(err.value)


def test_uart_links_are_checked(tmp_path: Path) -> None:
    good = TWO_NODES.replace("    qemu: {machine: mps2-an385}\ninterconnect:",
                             "    peripherals:\n      - {id: uart1, type: cmsdk-uart, address: 0x40005000, irq: 2}\n"
                             "    qemu: {machine: mps2-an385}\ninterconnect:\n  uart_links:\n    - {a: app.uart0, b: radio.uart1}")
    board = load_board_file(write(tmp_path, good, "good.yaml"))
    assert board.interconnect.uart_links[0].b == "radio.uart1"
    for bad, words in (("b: radio.uart1}", "is not a UART of radio"), ("a: app.uart0", "unknown node")):
        text = good.replace("b: radio.uart1}", "b: radio.uart9}") if bad.startswith("b") else \
            good.replace("a: app.uart0", "a: modem.uart0")
        with pytest.raises(BoardConfigError) as err:
            load_board_file(write(tmp_path, text))
        assert "interconnect.uart_links[0]" in str(err.value) and words in str(err.value)


def test_mirrors_and_unmodelled_ranges_are_checked(tmp_path: Path) -> None:
    base = ("system_id: m\nname: M\nnodes:\n  - id: cpu0\n    backend: builtin\n"
            "    processor: {type: cortex-m3, frequency: 25MHz}\n    memory:\n"
            "      - {name: ram, type: RAM, address: 0x20000000, size: 64K}\n")
    cases = {
        "      - {name: m, type: RAM, address: 0x20100000, size: 64K, mirror_of: nosuch}\n":
            ("mirror_of names 'nosuch'", "memory[1].mirror_of"),
        "      - {name: m, type: RAM, address: 0x20100000, size: 32K, mirror_of: ram}\n":
            ("a mirror has the size of the region it mirrors", "memory[1].mirror_of"),
        "    unmodelled: [{name: r, address: 0x20000000, size: 4K}]\n": ("overlaps memory ram", "unmodelled[0]"),
        "    unmodelled: [{name: r, address: 0x40000100, size: 4K}]\n": ("multiples of 4K", "unmodelled[0]"),
    }
    for extra, (message, where) in cases.items():
        path = tmp_path / "m.yaml"
        path.write_text(base + extra)
        with pytest.raises(BoardConfigError) as info:
            load_board_file(path)
        assert message in str(info.value) and where in str(info.value), str(info.value)
