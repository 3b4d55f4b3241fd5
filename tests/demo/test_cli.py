"""`openvlthinker demo` is registered, parses its options, and keeps `openvlthinker --help` free of gradio."""

import subprocess
import sys

from openvlthinker.cli import build_parser


def test_demo_options_and_defaults():
    args = build_parser().parse_args(["demo", "--endpoint", "http://gw:8000/v1", "--api-key", "k", "--port", "7861",
                                      "--admin-key", "a", "--rl-metrics", "runs/up/rl/metrics.jsonl"])
    assert (args.endpoint, args.api_key, args.port, args.admin_key, args.host) == ("http://gw:8000/v1", "k", 7861, "a",
                                                                                  "127.0.0.1")
    assert args.rl_metrics == "runs/up/rl/metrics.jsonl" and args._module.__name__ == "demo.cli"
    defaults = build_parser().parse_args(["demo"])
    assert (defaults.port, defaults.api_key, defaults.admin_key, defaults.rl_metrics) == (7860, "none", None, None)
    up = build_parser().parse_args(["up", "--no-demo", "--demo-port", "7999"])
    assert up.no_demo and up.demo_port == 7999


def test_parsing_does_not_import_gradio():
    code = ("import sys; from openvlthinker.cli import build_parser; build_parser().parse_args(['demo']); "
            "print('gradio' in sys.modules, 'openai' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
