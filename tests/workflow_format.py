"""API-format prompt (what /prompt takes) <-> UI-format workflow (what ComfyUI's editor and template browser
load), using the node definitions from /object_info for widget order."""

from __future__ import annotations

from typing import Any

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
SEED_NAMES = {"seed", "noise_seed"}


def _inputs(info: dict) -> list[tuple[str, Any, dict]]:
    out = []
    for section in ("required", "optional"):
        for name, spec in info["input"].get(section, {}).items():
            kind, options = spec[0], (spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {})
            out.append((name, kind, options))
    return out


def is_widget(kind: Any, options: dict) -> bool:
    return (isinstance(kind, list) or kind in WIDGET_TYPES) and not options.get("forceInput")


def to_ui(prompt: dict[str, dict], object_info: dict[str, dict]) -> dict:
    """A UI workflow with the same nodes, links and widget values as `prompt`."""
    nodes, links = [], []
    ids = {key: i + 1 for i, key in enumerate(prompt)}
    outputs: dict[tuple[int, int], list[int]] = {}
    for node in prompt.values():
        for value in node["inputs"].values():
            if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
                link_id = len(links) + 1
                outputs.setdefault((ids[value[0]], value[1]), []).append(link_id)
                links.append([link_id, ids[value[0]], value[1], None, None, None])
    link_index = 0
    for order, (key, node) in enumerate(prompt.items()):
        info = object_info[node["class_type"]]
        inputs, widgets = [], []
        for name, kind, options in _inputs(info):
            value = node["inputs"].get(name)
            linked = isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)
            if linked:
                link_id = links[link_index][0]
                link_index += 1
                links[link_id - 1][3:6] = [ids[key], len(inputs), kind if isinstance(kind, str) else "COMBO"]
                entry = {"name": name, "type": kind if isinstance(kind, str) else "COMBO", "link": link_id}
                if is_widget(kind, options):
                    entry["widget"] = {"name": name}
                inputs.append(entry)
            elif not is_widget(kind, options):
                inputs.append({"name": name, "type": kind, "link": None})
            if is_widget(kind, options):
                widgets.append(None if linked else value if value is not None else options.get("default"))
                if name in SEED_NAMES or options.get("control_after_generate"):
                    widgets.append("fixed")
        out = [
            {"name": n, "type": t, "links": outputs.get((ids[key], i), []), "slot_index": i}
            for i, (n, t) in enumerate(zip(info["output_name"], info["output"]))
        ]
        nodes.append(
            {
                "id": ids[key],
                "type": node["class_type"],
                "pos": [40 + 320 * (order % 4), 60 + 380 * (order // 4)],
                "size": [300, 200],
                "flags": {},
                "order": order,
                "mode": 0,
                "inputs": inputs,
                "outputs": out,
                "properties": {"Node name for S&R": node["class_type"]},
                "widgets_values": widgets,
            }
        )
    return {
        "last_node_id": len(nodes),
        "last_link_id": len(links),
        "nodes": nodes,
        "links": links,
        "groups": [],
        "config": {},
        "extra": {},
        "version": 0.4,
    }


def to_api(workflow: dict, object_info: dict[str, dict]) -> dict[str, dict]:
    """The API prompt a UI workflow stands for (what the editor sends when you press Queue)."""
    by_link = {link[0]: link for link in workflow["links"]}
    prompt = {}
    for node in workflow["nodes"]:
        info = object_info[node["type"]]
        values = iter(node.get("widgets_values", []))
        linked = {i["name"]: by_link[i["link"]] for i in node.get("inputs", []) if i.get("link") is not None}
        inputs: dict[str, Any] = {}
        for name, kind, options in _inputs(info):
            if is_widget(kind, options):
                value = next(values, None)
                if name in SEED_NAMES or options.get("control_after_generate"):
                    next(values, None)
                if name not in linked and value is not None:
                    inputs[name] = value
            if name in linked:
                inputs[name] = [str(linked[name][1]), linked[name][2]]
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt
