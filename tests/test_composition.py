"""The composition root: no service is given the daemon, no import circle through it, and the
run operations are not the run manager's life cycle."""

from __future__ import annotations

import inspect
import subprocess
import sys

import grimp

from daq.context import RunControl, ServiceContext


def _graph() -> grimp.ImportGraph:
    # TYPE_CHECKING imports count too: a circle only the type checker sees is still a circle.
    return grimp.build_graph("daq", "drivers")


def test_nothing_the_daemon_uses_imports_the_daemon() -> None:
    graph = _graph()
    used = graph.find_upstream_modules("daq.daemon")
    assert used, "the graph is empty: nothing was analysed"
    back = {m: graph.find_shortest_chain(importer=m, imported="daq.daemon") for m in sorted(used)}
    assert {m: c for m, c in back.items() if c is not None} == {}


#: The top layer: the command line and the validation pack it runs start daemons and load files.
TOP = ("daq.cli.", "daq.validate")


def test_only_the_command_line_imports_the_daemon() -> None:
    graph = _graph()
    importers = graph.find_modules_that_directly_import("daq.daemon")
    assert {m for m in importers if not m.startswith(TOP)} == set()


#: The daemon, its composition root and what it hands the services, and the services.
COMPOSED = (
    "daq.daemon", "daq.services", "daq.context", "daq.status", "daq.supervisor", "daq.pipeline",
    "daq.api", "daq.runs.manager", "daq.runs.clock", "daq.runs.attribution", "daq.tlc.service",
    "daq.forward", "daq.systemd", "daq.config",
)  # fmt: skip


def test_no_module_of_the_composition_is_part_of_an_import_circle() -> None:
    graph = _graph()
    circles = []
    for module in sorted(m for m in graph.modules if m.startswith(COMPOSED)):
        for imported in graph.find_modules_directly_imported_by(module):
            if imported == module or not imported.startswith(("daq", "drivers")):
                continue
            back = graph.find_shortest_chain(importer=imported, imported=module)
            # A package importing its own submodules (re-exports) is not a circle of layers.
            if back is not None and not imported.startswith(module + "."):
                circles.append((module, *back))
    assert circles == []


def test_core_modules_import_in_isolation() -> None:
    # Each in a fresh interpreter: an import that only works after another module was loaded
    # first is an order dependence a circle hides.
    for module in ("daq.context", "daq.status", "daq.services", "daq.runs.manager", "daq.api.server"):
        subprocess.run([sys.executable, "-c", f"import {module}"], check=True)


def test_run_control_is_not_a_life_cycle() -> None:
    operations = {name for name, _ in inspect.getmembers(RunControl, inspect.isfunction)}
    assert {"open_run", "close_run", "annotate", "mark_t0", "active"} <= operations
    assert not operations & {"start", "stop"}
    fields = set(ServiceContext.__dataclass_fields__)
    assert not fields & {"daemon", "services"}


#: Each feature's config section and where it lives (with the feature, not with the loader).
SECTION_MODULES = (
    "daq.config.sections", "daq.journal.settings", "daq.api.config", "daq.forward.config",
    "daq.runs.settings", "daq.runs.qc_settings", "daq.tlc.methods", "daq.equilibrium",
)  # fmt: skip


def test_config_sections_sit_below_the_loader() -> None:
    graph = _graph()
    for module in SECTION_MODULES:
        upstream = graph.find_upstream_modules(module)
        assert not upstream & {"daq.configfile.load", "daq.configfile.model"}, module
    # The loader and the model know every section; only the command line and the config file
    # package itself (the config in force for a run, re-read from the journal's snapshots) load
    # files: the API is given that by the composition root.
    importers = graph.find_modules_that_directly_import("daq.configfile.load")
    assert {m for m in importers if not m.startswith(TOP)} == {"daq.configfile.snapshot"}
    # No feature names the assembled file, not even for the type checker: they read it through
    # protocols of daq.config; only the daemon, the composition root and what it hands over do.
    configfile = {m for m in graph.modules if m.startswith("daq.configfile")}
    users = {i for m in configfile for i in graph.find_modules_that_directly_import(m)} - configfile
    assert {m for m in users if not m.startswith(TOP)} == {"daq.daemon", "daq.services", "daq.context"}


def test_the_features_cross_checks_are_typed_without_the_model() -> None:
    from typing import Any, get_type_hints

    from daq.alarms.settings import check_config as alarms_check
    from daq.config.base import InstrumentsConfig
    from daq.forward.naming import check_naming
    from daq.runs.qc_settings import check_config as qc_check
    from daq.tlc.methods import check_config as tlc_check

    for check in (alarms_check, qc_check, tlc_check, check_naming):
        model = get_type_hints(check)["model"]
        assert model is not Any, check
        assert InstrumentsConfig in model.__mro__, check


def test_the_config_model_is_static_and_typed() -> None:
    from typing import get_type_hints

    from daq.api.config import ApiSection
    from daq.configfile.load import parse_config
    from daq.configfile.model import Config, DaqConfig
    from daq.journal.settings import JournalSection

    assert get_type_hints(Config.__init__)["model"] is DaqConfig
    hints = get_type_hints(DaqConfig)
    assert hints["api"] is ApiSection
    assert hints["journal"] is JournalSection
    cfg = parse_config(
        '[[instruments]]\nname = "dc1"\nkind = "veenstra-vdc404"\nport = "tcp://127.0.0.1:1"\n'
    )
    assert isinstance(cfg.model, DaqConfig)
    assert type(cfg.model.instruments[0]).__name__ == "Vdc404Config"


def test_the_api_reads_status_from_the_core_not_the_supervisors() -> None:
    graph = _graph()
    api = {m for m in graph.modules if m == "daq.api" or m.startswith("daq.api.")}
    direct = {m for m in api if graph.direct_import_exists(importer=m, imported="daq.supervisor")}
    assert direct == set()
    assert graph.direct_import_exists(importer="daq.api.app", imported="daq.status")
