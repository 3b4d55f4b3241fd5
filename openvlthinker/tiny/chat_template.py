"""Qwen-style chat template for the tiny model (the Qwen3-VL template without tools/thinking).

Renders ``<|im_start|>{role}\\n{content}<|im_end|>\\n`` per message; content is a string or
a list of parts: ``{"type": "image"}`` (also ``image_url`` / any part carrying an ``image``
key) becomes ``<|vision_start|><|image_pad|><|vision_end|>``, ``{"type": "video"}`` becomes
the video placeholder, ``{"type": "text", "text": ...}`` is copied. The processor later
expands each ``<|image_pad|>`` to one token per merged patch. ``add_generation_prompt``
appends ``<|im_start|>assistant\\n``. This is the same call surface as the real Qwen3-VL
processor's ``apply_chat_template``.
"""

__all__ = ["CHAT_TEMPLATE"]

# Written with {%- -%} trimming so the output has no stray whitespace; keep it byte-compatible
# with the Qwen3-VL template for system/user/assistant turns with images and text.
CHAT_TEMPLATE = (
    "{%- macro render(content) -%}"
    "{%- if content is string -%}{{- content -}}"
    "{%- elif content is not none -%}"
    "{%- for part in content -%}"
    "{%- if part is string -%}{{- part -}}"
    "{%- elif part.type == 'image' or part.type == 'image_url' or 'image' in part or 'image_url' in part -%}"
    "{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}"
    "{%- elif part.type == 'video' or 'video' in part -%}"
    "{{- '<|vision_start|><|video_pad|><|vision_end|>' -}}"
    "{%- elif 'text' in part -%}{{- part.text -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- endif -%}"
    "{%- endmacro -%}"
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message.role + '\\n' -}}"
    "{{- render(message.content) -}}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)
