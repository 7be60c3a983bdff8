"""Draw a module's state graph for people (matplotlib; layers by distance from start)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import networkx as nx  # noqa: E402

from simulator.model.schema import DiseaseModule, RateTable

COLORS = {"death": "#d62728", "terminal": "#7f7f7f", "hazards": "#ff7f0e", "encounter": "#2ca02c", "other": "#1f77b4"}


def module_graph(module: DiseaseModule) -> nx.DiGraph:
    """The module's states as a directed graph with edge labels (probability, rate, guard)."""
    graph = nx.DiGraph()
    for name, state in module.states.items():
        kind = (
            "death"
            if state.death
            else "terminal"
            if state.terminal
            else "hazards"
            if state.hazards
            else "encounter"
            if state.encounter
            else "other"
        )
        graph.add_node(name, kind=kind)
        for branch in state.branches or []:
            graph.add_edge(name, branch.to, label=f"p={branch.probability:g}")
        for case in state.cases or []:
            graph.add_edge(name, case.to, label="if")
        if state.otherwise:
            graph.add_edge(name, state.otherwise, label="else")
        for hazard in state.hazards or []:
            rate = hazard.rate_per_year
            graph.add_edge(name, hazard.to, label="hazard" if isinstance(rate, RateTable) else f"{rate:g}/y")
        if state.next:
            graph.add_edge(name, state.next, label="after" if state.after else "wellness" if state.wait_for else "")
    return graph


def draw_module(module: DiseaseModule, path: Path) -> None:
    graph = module_graph(module)
    depth = nx.single_source_shortest_path_length(graph, module.start) if module.start else {}
    for node in graph:
        graph.nodes[node]["layer"] = depth.get(node, max(depth.values(), default=0) + 1)
    positions = nx.multipartite_layout(graph, subset_key="layer", align="horizontal", scale=-1)
    layers = max(nx.get_node_attributes(graph, "layer").values(), default=0) + 1
    width = max(8.0, 1.8 * max(list(nx.get_node_attributes(graph, "layer").values()).count(k) for k in range(layers)))
    fig, ax = plt.subplots(figsize=(width, max(6.0, 1.4 * layers)))
    colors = [COLORS[graph.nodes[n]["kind"]] for n in graph]
    nx.draw_networkx_nodes(graph, positions, node_color=colors, node_size=900, alpha=0.25, ax=ax)
    nx.draw_networkx_labels(graph, positions, font_size=8, ax=ax)
    nx.draw_networkx_edges(
        graph, positions, arrows=True, arrowsize=12, node_size=900, connectionstyle="arc3,rad=0.08", ax=ax
    )
    nx.draw_networkx_edge_labels(
        graph, positions, edge_labels=nx.get_edge_attributes(graph, "label"), font_size=6, ax=ax
    )
    ax.set_title(f"{module.title} ({module.name})")
    ax.axis("off")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
