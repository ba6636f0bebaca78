"""The example's run executor: it looks at what each input brought and remembers the turns.

``MEERKAT_EXECUTOR=example_agent.executor:execute``. For every input of the batch it reports
the number of words of its text and each inline image (media type and decoded size), so a test
can see that an image reached the executor intact. The session snapshot counts the turns run so
far and keeps the last batch's description; ``run.completed`` carries it as its output.
"""

from __future__ import annotations

import base64
from typing import Any

from schemas import AnyInput, InlineImageBlock, TextBlock
from worker.runs.executors import RunRequest, RunResult


async def execute(run: RunRequest) -> RunResult:
    described = [describe(item) for item in run.inputs]
    turns = int((run.session or {}).get("turns", 0)) + 1
    return RunResult(session={"turns": turns, "last": described},
                     message_count=len(described), output={"turn": turns, "inputs": described})


def describe(item: AnyInput) -> dict[str, Any]:
    words = 0
    images: list[dict[str, Any]] = []
    content = getattr(item, "content", [])
    for block in [TextBlock(text=content)] if isinstance(content, str) else content:
        if isinstance(block, TextBlock):
            words += len(block.text.split())
        elif isinstance(block, InlineImageBlock):
            images.append({"media_type": block.media_type.value,
                           "bytes": len(base64.b64decode(block.data))})
    return {"input_id": str(item.header.id), "words": words, "images": images}
