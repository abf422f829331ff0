"""The plugin manager: built-in plugins from a fixed tuple, third-party ones from entry points."""

from __future__ import annotations

import importlib
import os
import sys
import warnings
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

import pluggy

from hubindex import hookspecs
from hubindex.catalog import CONNECTION_PREPARERS
from hubindex.types import Component, Corpus, Crawler, Executor, Metric, Probe, Query

ENTRY_POINT_GROUP = "hubindex"
# Comma-separated allow-list: when set, only these plugins (by name) are loaded.
LOAD_PLUGINS_ENV = "HUBINDEX_LOAD_PLUGINS"

DEFAULT_PLUGINS: tuple[str, ...] = (
    "hubindex_plugins.crawl_hf",
    "hubindex_plugins.crawl_timm",
    "hubindex_plugins.crawl_local",
    "hubindex_plugins.catalog_views",
    "hubindex_plugins.corpora",
    "hubindex_plugins.probe_text",
    "hubindex_plugins.probe_image",
    "hubindex_plugins.probe_vision",
    "hubindex_plugins.metrics",
    "hubindex_plugins.metric_nleep",
    "hubindex_plugins.metric_task_relatedness",
    "hubindex_plugins.metrics_discriminant",
    "hubindex_plugins.metrics_information",
    "hubindex_plugins.metric_emms",
    "hubindex_plugins.queries",
    "hubindex_plugins.zoo",
    "hubindex_plugins.executors",
    "hubindex_plugins.web_pages",
)

pm = pluggy.PluginManager("hubindex")
pm.add_hookspecs(hookspecs)
# Every catalog connection gets what the `prepare_catalog` hooks add (views, macros).
CONNECTION_PREPARERS.append(lambda conn: pm.hook.prepare_catalog(conn=conn))


def _allowed() -> set[str] | None:
    value = os.environ.get(LOAD_PLUGINS_ENV)
    if value is None:
        return None
    return {name.strip() for name in value.split(",") if name.strip()}


def load_default_plugins() -> None:
    """Register the built-in plugins (subject to HUBINDEX_LOAD_PLUGINS)."""
    allowed = _allowed()
    for module_name in DEFAULT_PLUGINS:
        if allowed is not None and module_name not in allowed:
            continue
        if pm.get_plugin(module_name) is None:
            pm.register(importlib.import_module(module_name), name=module_name)


def load_entry_point_plugins() -> None:
    """Register third-party plugins from the `hubindex` entry-point group.

    Skipped under pytest so that whatever is installed in the environment cannot change test
    results; tests register the plugins they need by name.
    """
    if "pytest" in sys.modules and os.environ.get("HUBINDEX_TEST_ENTRY_POINTS") != "1":
        return
    allowed = _allowed()
    if allowed is None:
        pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
        return
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in allowed and pm.get_plugin(ep.name) is None:
            pm.register(ep.load(), name=ep.name)


load_default_plugins()
load_entry_point_plugins()


# --------------------------------------------------------------------------------------------
# Registries built from the registration hooks

C = TypeVar("C", bound=Component)


@dataclass(frozen=True)
class Registration:
    component: type[Component]
    plugin: str


def _collect(hook: Callable[..., Any], base: type[C]) -> dict[str, Registration]:
    """Call a `register_*` hook and return {name: registration}, validated and de-duplicated."""
    found: dict[str, Registration] = {}
    for impl in hook.get_hookimpls():
        plugin_name = pm.get_name(impl.plugin) or repr(impl.plugin)

        def register(component: type[C], _plugin: str = plugin_name) -> None:
            if not (isinstance(component, type) and issubclass(component, base)):
                raise TypeError(
                    f"plugin {_plugin!r} registered {component!r}, which is not a {base.__name__} subclass"
                )
            component.validate_class()
            previous = found.get(component.name)
            if previous is not None and previous.component is not component:
                warnings.warn(
                    f"{base.kind} {component.name!r} from plugin {_plugin!r} replaces the one "
                    f"from {previous.plugin!r}",
                    stacklevel=2,
                )
            found[component.name] = Registration(component, _plugin)

        impl.function(register=register)
    return found


def crawlers() -> dict[str, Registration]:
    """Registered crawlers by name."""
    return _collect(pm.hook.register_crawlers, Crawler)


def corpora() -> dict[str, Registration]:
    """Registered probing corpora by name."""
    return _collect(pm.hook.register_corpora, Corpus)


def probes() -> dict[str, Registration]:
    """Registered probes by name."""
    return _collect(pm.hook.register_probes, Probe)


def metrics() -> dict[str, Registration]:
    """Registered metrics by name."""
    return _collect(pm.hook.register_metrics, Metric)


def queries() -> dict[str, Registration]:
    """Registered queries by name."""
    return _collect(pm.hook.register_queries, Query)


def executors() -> dict[str, Registration]:
    """Registered executors by name."""
    return _collect(pm.hook.register_executors, Executor)


def known_names(registered: dict[str, Registration]) -> str:
    """The registered names for an error message, or why there are none."""
    if registered:
        return ", ".join(sorted(registered))
    if _allowed() is not None:
        return f"none loaded ({LOAD_PLUGINS_ENV} leaves them out)"
    return "none installed"


REGISTRIES: dict[str, Callable[[], dict[str, Registration]]] = {
    "crawlers": crawlers,
    "corpora": corpora,
    "probes": probes,
    "metrics": metrics,
    "queries": queries,
    "executors": executors,
}


def describe_plugins() -> list[dict[str, Any]]:
    """Every registered plugin with the hooks it implements and the components it registers."""
    registered = {key: collect() for key, collect in REGISTRIES.items()}
    out = []
    for plugin in pm.get_plugins():
        name = pm.get_name(plugin)
        hooks = sorted(h.name for h in pm.get_hookcallers(plugin) or [])
        entry: dict[str, Any] = {
            "name": name,
            "builtin": name in DEFAULT_PLUGINS,
            "hooks": hooks,
        }
        for key, registrations in registered.items():
            names = sorted(
                f"{n} (v{r.component.version})" for n, r in registrations.items() if r.plugin == name
            )
            if names:
                entry[key] = names
        version = getattr(plugin, "__version__", None)
        if version:
            entry["version"] = version
        out.append(entry)
    return sorted(out, key=lambda e: (not e["builtin"], e["name"]))
