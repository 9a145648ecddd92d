"""A no-op streaming Gradio ChatInterface shaped like the demo (multimodal textbox, one extra
input, api_name "respond"): what Gradio itself costs from request to first update.

    python benchmarks/gradio_floor_app.py PORT     (used by serve_stream.py)
"""

from __future__ import annotations

import sys


def main() -> None:
    import gradio as gr

    def respond(message, history, options=""):
        yield [gr.ChatMessage(content="x", metadata={"title": "Thinking", "status": "done"}),
               gr.ChatMessage(content="(A) rising")]

    demo = gr.ChatInterface(respond, multimodal=True, additional_inputs=[gr.Textbox()], api_name="respond",
                            analytics_enabled=False)
    demo.queue().launch(server_name="127.0.0.1", server_port=int(sys.argv[1]), quiet=True)


if __name__ == "__main__":
    main()
