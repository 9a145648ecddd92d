"""The Gradio audio Q&A demo (`dt-eval demo`); the app lives in `dt_eval.apps.demo.app`."""
