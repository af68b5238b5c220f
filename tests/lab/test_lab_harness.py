"""The harness itself: JupyterLab runs with the intended settings, and where widget comms are handled.

With JupyterLab's defaults (`commsOverSubshells: "perCommTarget"`) and ipykernel 7, a
widget's comm messages are handled on a subshell thread once the kernel has replied on
that comm from a subshell request (ipywidgets echoes every value update), while a
button's clicks stay on the main thread: a text box's update and a click arrive on two
threads at once. With the setting disabled, every handler runs on the main thread.
This is why `ChatWidget`'s handlers must be thread-safe (see `streamchat.notebook.widget`).
"""

from __future__ import annotations

from lab_helpers import Lab

PROBE = """
import threading
import ipywidgets
threads = []
text = ipywidgets.Text()
text.observe(lambda change: threads.append(("text", threading.current_thread().name)), names="value")
button = ipywidgets.Button(description="Which thread?")
button.on_click(lambda _: threads.append(("click", threading.current_thread().name)))
ipywidgets.VBox([text, button])
"""


def test_comm_handlers_run_on_a_subshell_thread_only_with_default_settings(lab: Lab) -> None:
    setting = lab.page.evaluate(
        """async () => {
            const id = '@jupyterlab/apputils-extension:kernels-settings';
            const plugin = await window.jupyterapp.serviceManager.settings.fetch(id);
            return plugin.schema.properties.commsOverSubshells.default;
        }"""
    )
    nb = lab.open("probe.ipynb", [PROBE, "print(len(threads))", "print(threads)"])
    nb.run(0)
    box = nb.output(0).locator("input[type=text]")
    for count, word in enumerate(("one", "two"), start=1):
        box.fill(word)
        nb.wait_until(lambda n=count: nb.run_code(1) == f"{n}\n", f"text update {count} handled by the kernel")
    nb.output(0).get_by_role("button", name="Which thread?").click()
    nb.wait_until(lambda: nb.run_code(1) == "3\n", "two text updates and a click handled by the kernel")
    threads = nb.run_code(2)
    lab.screenshot("probe", nb.cell(0))
    if lab.server.mode == "default":
        assert setting == "perCommTarget"
        assert threads.startswith("[('text', 'MainThread'), ('text', 'subshell-"), threads
        assert threads.endswith("('click', 'MainThread')]\n"), threads
    else:
        assert setting == "disabled"
        assert threads == "[('text', 'MainThread'), ('text', 'MainThread'), ('click', 'MainThread')]\n"
