"""on_ui_tabs / on_ui_settings as the WebUI offers them: callbacks collected, called by the launcher."""

tab_callbacks = []
settings_callbacks = []


def on_ui_tabs(callback):
    tab_callbacks.append(callback)


def on_ui_settings(callback):
    settings_callbacks.append(callback)
