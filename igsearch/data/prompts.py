"""Prompt templates and the tags of the search-agent protocol.

Two templates:
- ``refine`` (default, AutoRefine style, what IG uses): the policy writes ``<search> q </search>``,
  the environment injects ``<documents> ... </documents>``, the policy summarises them in
  ``<refine> ... </refine>`` and finally writes ``<answer> ... </answer>``.
- ``search-r1``: Search-R1's protocol with ``<information> ... </information>`` for documents and no
  refine step.
"""

from __future__ import annotations

from dataclasses import dataclass

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
SEARCH_OPEN, SEARCH_CLOSE = "<search>", "</search>"
DOCS_OPEN, DOCS_CLOSE = "<documents>", "</documents>"
INFO_OPEN, INFO_CLOSE = "<information>", "</information>"
REFINE_OPEN, REFINE_CLOSE = "<refine>", "</refine>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"

#: Every tag of both protocols; the tiny tokenizer makes each of them one token.
ALL_TAGS = (
    THINK_OPEN, THINK_CLOSE, SEARCH_OPEN, SEARCH_CLOSE, DOCS_OPEN, DOCS_CLOSE,
    INFO_OPEN, INFO_CLOSE, REFINE_OPEN, REFINE_CLOSE, ANSWER_OPEN, ANSWER_CLOSE,
)


@dataclass(frozen=True)
class PromptTemplate:
    """A user-message template and the tags its protocol uses for injected documents."""

    name: str
    instruction: str
    docs_open: str
    docs_close: str
    uses_refine: bool

    def render(self, question: str) -> str:
        """The user message for ``question`` (the chat template is applied by the tokenizer)."""
        question = question.strip()
        if question and question[-1] not in "?.!":
            question += "?"
        return self.instruction.format(question=question)


REFINE_TEMPLATE = PromptTemplate(
    name="refine",
    instruction=(
        "Answer the given question. You may search a knowledge source as many times as you need. "
        "To search, write <search> query </search>; the results come back between <documents> and "
        "</documents>. After each search, write the facts you need from the documents between "
        "<refine> and </refine>. When you know the answer, write it between <answer> and </answer>, "
        "without explanation. Question: {question}"
    ),
    docs_open=DOCS_OPEN,
    docs_close=DOCS_CLOSE,
    uses_refine=True,
)

SEARCH_R1_TEMPLATE = PromptTemplate(
    name="search-r1",
    instruction=(
        "Answer the given question. You must conduct reasoning inside <think> and </think> first "
        "every time you get new information. After reasoning, if you find you lack some knowledge, "
        "you can call a search engine by <search> query </search> and it will return the top "
        "searched results between <information> and </information>. You can search as many times "
        "as you want. If you find no further external knowledge needed, you can directly provide "
        "the answer inside <answer> and </answer>, without detailed illustrations. For example, "
        "<answer> Beijing </answer>. Question: {question}"
    ),
    docs_open=INFO_OPEN,
    docs_close=INFO_CLOSE,
    uses_refine=False,
)

TEMPLATES = {t.name: t for t in (REFINE_TEMPLATE, SEARCH_R1_TEMPLATE)}


def get_template(name: str) -> PromptTemplate:
    """The template called ``name``; a clear error lists the known names."""
    try:
        return TEMPLATES[name]
    except KeyError:
        raise ValueError(f"unknown prompt template {name!r}; known: {sorted(TEMPLATES)}") from None


def format_documents(passages, template: PromptTemplate = REFINE_TEMPLATE) -> str:
    """The text the environment injects after a search: ``\\n<documents>...</documents>\\n``.

    ``passages`` are objects with ``contents`` (``"Title"\\ntext``, the Search-R1 corpus format).
    """
    lines = []
    for rank, passage in enumerate(passages, 1):
        contents = passage.contents if hasattr(passage, "contents") else str(passage)
        title, _, body = contents.partition("\n")
        lines.append(f"Doc {rank}(Title: {title.strip().strip(chr(34))}) {body.strip()}")
    return f"\n{template.docs_open}\n" + "\n".join(lines) + f"\n{template.docs_close}\n"


def chat_prompt(tokenizer, messages) -> str:
    """The prompt text for a list of chat messages, ending where the assistant turn starts.

    Uses the tokenizer's chat template; a tokenizer without one gets the user content as is.
    """
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return "\n".join(m["content"] for m in messages) + "\n"


def question_messages(row, template: PromptTemplate, *, own_only_if_same_template: bool = False) -> list[dict]:
    """The chat messages of a question row (``igsearch.data.loaders.QARow``): its own prompt when it has one,
    else ``template``'s rendering of the question as one user message.

    ``own_only_if_same_template``: keep the row's own prompt only when its last message is ``template``'s
    rendering of the question (SFT: the oracle's response uses ``template``'s tags, so its prompt must too)."""
    rendered = template.render(row.question)
    if row.prompt and (not own_only_if_same_template or row.prompt[-1].get("content") == rendered):
        return list(row.prompt)
    return [{"role": "user", "content": rendered}]


def question_prompt(tokenizer, row, template: PromptTemplate, *, own_only_if_same_template: bool = False) -> str:
    """The prompt text the policy is given for a question row: its chat messages (``question_messages``)
    through the chat template."""
    return chat_prompt(tokenizer, question_messages(row, template,
                                                   own_only_if_same_template=own_only_if_same_template))
