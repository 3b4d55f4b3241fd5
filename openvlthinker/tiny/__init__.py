"""The embedded default: ShapeWorld synthetic tasks, a tiny Qwen3-VL and its trainer.

Kept import-free; use the submodules (``openvlthinker.tiny.build``, ``.shapeworld``).
"""
