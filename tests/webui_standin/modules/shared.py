"""opts (settings page values), OptionInfo and cmd_opts, shaped like the WebUI's."""

from types import SimpleNamespace


class OptionInfo:
    def __init__(
        self, default=None, label="", component=None, component_args=None, onchange=None, section=None, **kw
    ):
        self.default, self.label, self.component = default, label, component
        self.component_args, self.section = component_args, section


class Options:
    def __init__(self):
        object.__setattr__(self, "data", {})
        object.__setattr__(self, "data_labels", {})

    def add_option(self, key, info):
        self.data_labels[key] = info
        self.data.setdefault(key, info.default)

    def __getattr__(self, key):
        if key in self.data:
            return self.data[key]
        raise AttributeError(key)

    def __setattr__(self, key, value):
        self.data[key] = value


opts = Options()
cmd_opts = SimpleNamespace(lora_dir=None)
